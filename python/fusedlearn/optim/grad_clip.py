"""Gradient clipping by global norm or by value, and non-finite gradient detection.

Each function takes what an optimizer takes, or plain gradient arrays:

* a torch ``nn.Parameter`` or a torch tensor with ``requires_grad`` (its ``.grad`` is used);
* a ``fusedlearn.nn.Parameter`` (its ``.grad``) or an ``(array, grad)`` pair (the grad);
* a gradient array itself (numpy array, or torch tensor without ``requires_grad``);

either one of them or an iterable of them.  Params without a gradient are
left out.  Norms use one fused pass per (device, dtype) with float64
accumulation; scaling and clamping are in place.
"""
from __future__ import annotations

import math

import numpy as np

from .. import functional as F
from . import _params as P


def _grad_of_item(x):
    if P.is_torch_tensor(x):
        torch = P._torch()
        if isinstance(x, torch.nn.Parameter) or x.requires_grad:
            return None if x.grad is None else x.grad.detach()
        return x
    if isinstance(x, (P.Parameter, P.ArrayPair)):
        return x.grad
    if isinstance(x, tuple) and len(x) == 2 and P.is_array(x[0]) and P.is_array(x[1]):
        return x[1]
    if P.is_array(x):
        return x
    raise TypeError(f"expected parameters or gradient arrays, got {type(x).__name__}")


def collect_grads(parameters_or_grads) -> list:
    """The gradient arrays named by ``parameters_or_grads`` (see the module docstring)."""
    x = parameters_or_grads
    if P.is_torch_tensor(x) or P.is_array(x) or isinstance(x, (P.Parameter, P.ArrayPair)):
        items = [x]
    else:
        items = list(x)
    grads = [_grad_of_item(i) for i in items]
    return [g for g in grads if g is not None]


def _to_numpy(a) -> np.ndarray:
    if P.is_torch_tensor(a):
        a = a.detach().cpu().numpy()
    elif not isinstance(a, np.ndarray):
        get = getattr(a, "get", None)  # cupy
        a = get() if callable(get) else np.asarray(a)
    return np.asarray(a, dtype=np.float64).reshape(-1)


def _total_norm(grads: list, norm_type: float) -> float:
    if norm_type == 2.0:
        return math.sqrt(sum(F.sum_of_squares(b) for b in P.buckets(grads)))
    if norm_type == math.inf:
        maxes = [F.abs_max(b) for b in P.buckets(grads)]
        return math.nan if any(math.isnan(m) for m in maxes) else max(maxes)
    # Other orders: torch's definition, the p-norm of the per-array p-norms (numpy, float64).
    norms = np.array([np.linalg.norm(_to_numpy(g), ord=norm_type) for g in grads])
    return float(np.linalg.norm(norms, ord=norm_type))


def clip_grad_norm_(parameters_or_grads, max_norm: float, norm_type: float = 2.0,
                    error_if_nonfinite: bool = False, foreach=None) -> float:
    """Scale all gradients together so that their global ``norm_type``-norm is at
    most ``max_norm``, as ``torch.nn.utils.clip_grad_norm_``: the total norm is
    the norm of all gradients as one vector, and when
    ``max_norm / (norm + 1e-6) < 1`` every gradient is multiplied by it.

    Returns the total norm before clipping (a float).  With
    ``error_if_nonfinite=True`` a non-finite norm raises ``RuntimeError`` and
    leaves the gradients alone; otherwise they are scaled as torch does (a NaN
    norm makes them NaN).  ``foreach`` is accepted for torch compatibility.
    """
    max_norm = float(max_norm)
    norm_type = float(norm_type)
    grads = collect_grads(parameters_or_grads)
    if not grads:
        return 0.0
    total = _total_norm(grads, norm_type)
    if error_if_nonfinite and not math.isfinite(total):
        raise RuntimeError(
            f"The total norm of order {norm_type} for gradients from `parameters` is non-finite, so it cannot "
            "be clipped. To disable this error and scale the gradients by the non-finite norm anyway, set "
            "`error_if_nonfinite=False`")
    coef = max_norm / (total + 1e-6)
    if not coef >= 1.0:  # also when coef is NaN, as torch scales by it then
        for b in P.buckets(grads):
            F.scale_(b, coef)
    return total


def clip_grad_value_(parameters_or_grads, clip_value: float, foreach=None) -> None:
    """Clamp every gradient element into ``[-clip_value, clip_value]`` in place
    (``torch.nn.utils.clip_grad_value_``)."""
    clip_value = float(clip_value)
    for b in P.buckets(collect_grads(parameters_or_grads)):
        F.clamp_(b, -clip_value, clip_value)


def found_inf(parameters_or_grads) -> bool:
    """True when any gradient holds an inf or a NaN (one fused pass per dtype)."""
    return any(F.has_nonfinite(b) for b in P.buckets(collect_grads(parameters_or_grads)))
