"""Adafactor: factored second moments, relative step size and update clipping."""
from __future__ import annotations

from .. import functional as F
from . import _params as P
from .optimizer import Optimizer


def _machine_eps(data) -> float:
    """torch.finfo(dtype).eps of the param's dtype (float32 or float64; the kernel takes no other)."""
    return 2.0 ** -52 if "64" in str(data.dtype) else 2.0 ** -23


class Adafactor(Optimizer):
    r"""Adafactor (Shazeer & Stern 2018), as ``torch.optim.Adafactor``.

    At step t (from 1), with ``tau = beta2_decay``, ``eps = (eps1, eps2)``
    (``eps1=None`` means the dtype's machine epsilon) and ``G = +-grad``
    (``maximize``)::

        w     = t ** tau                                  (1 - beta2_t, the lerp weight)
        rho   = min(lr, 1 / sqrt(t))
        alpha = max(eps2, RMS(theta)) * rho               (theta before the step)
        theta <- theta * (1 - lr * weight_decay)
        2+ dims (the leading ones are batch dims; the last two are factored):
            R <- lerp(R, mean_cols(G^2), w)               (state 'row_var', shape [..., rows, 1])
            C <- lerp(C, mean_rows(G^2), w)               (state 'col_var', shape [..., 1, cols])
            V =  R C / max(mean_rows(R), eps1)
        1 dim:
            V <- lerp(V, G^2, w)                          (state 'variance')
        U     = G / sqrt(max(V, eps1^2))
        theta <- theta - alpha / max(1, RMS(U) / d) * U

    Equations and the kernel's passes over memory: docs/math/optimizers.md, "Adafactor".
    """

    def __init__(self, params, lr=1e-2, beta2_decay=-0.8, eps=(None, 1e-3), d=1.0, weight_decay=0.0, *,
                 foreach=None, maximize=False, skip_nonfinite=False):
        _check(lr, beta2_decay, eps, d, weight_decay)
        defaults = dict(lr=lr, beta2_decay=beta2_decay, eps=tuple(eps), d=d, weight_decay=weight_decay,
                        foreach=foreach, maximize=maximize)
        super().__init__(params, defaults, skip_nonfinite=skip_nonfinite)

    def _check_group(self, group):
        _check(group["lr"], group["beta2_decay"], group["eps"], group["d"], group["weight_decay"])

    def _state_names(self, group):
        return ["row_var", "col_var", "variance"]

    def _param_state_names(self, group, data, names):
        return ["row_var", "col_var"] if len(data.shape) > 1 else ["variance"]

    def _new_state(self, group, name, data):
        if name == "row_var":
            return P.full_like(data[..., :1], 0.0)
        if name == "col_var":
            return P.full_like(data[..., :1, :], 0.0)
        return P.full_like(data, 0.0)

    def _state_shape(self, name, shape):
        if name == "row_var":
            return (*shape[:-1], 1)
        if name == "col_var":
            return (*shape[:-2], 1, shape[-1])
        return shape

    def _update(self, group, params, grads, states, step):
        eps1, eps2 = group["eps"]
        for p, g, r, c, v in zip(params, grads, states["row_var"], states["col_var"], states["variance"]):
            F.adafactor_(p, g, r, c, v, step=step, lr=float(group["lr"]),
                         beta2_decay=float(group["beta2_decay"]),
                         eps1=_machine_eps(p) if eps1 is None else float(eps1), eps2=float(eps2),
                         d=float(group["d"]), weight_decay=float(group["weight_decay"]),
                         maximize=bool(group["maximize"]))


def _check(lr, beta2_decay, eps, d, weight_decay):
    """torch.optim.Adafactor's checks, with its exact ValueError texts."""
    if not 0.0 <= lr:
        raise ValueError(f"Learning rate should be >= 0 but is: {lr}")
    if not 0.0 >= beta2_decay:
        raise ValueError(f"beta2_decay should be <= 0 but is: {beta2_decay}")
    if eps[0] is not None and not 0.0 <= eps[0]:
        raise ValueError(f"epsilon1 should be >= 0 but is: {eps[0]}")
    if not 0.0 <= eps[1]:
        raise ValueError(f"epsilon2 should be >= 0 but is: {eps[1]}")
    if not 1.0 <= d:
        raise ValueError(f"Clipping threshold d should be >= 1 but is: {d}")
    if not 0.0 <= weight_decay:
        raise ValueError(f"weight_decay should be >= 0 but is: {weight_decay}")
