"""How the optimizers see a parameter: its data array, its gradient, arrays like it.

Three kinds of parameter are accepted:

* torch tensors / ``torch.nn.Parameter`` (``.grad`` is read; the kernels get
  ``p.detach()`` and ``p.grad.detach()``, which share storage with them);
* :class:`fusedlearn.nn.Parameter` (``.data`` and ``.grad`` numpy arrays);
* ``(array, grad_array)`` pairs, wrapped in :class:`ArrayPair`: the grad array
  is read in place at every step, so the user writes gradients into it.

torch is never imported here: a tensor can only exist once torch is imported.
"""
from __future__ import annotations

import sys

import numpy as np

from ..nn.parameter import Parameter


def _torch():
    return sys.modules.get("torch")


def is_torch_tensor(x) -> bool:
    t = _torch()
    return t is not None and isinstance(x, t.Tensor)


def is_array(x) -> bool:
    """Something the kernels can read: numpy, torch, or DLPack / buffer-protocol arrays."""
    if isinstance(x, np.ndarray) or is_torch_tensor(x):
        return True
    return hasattr(x, "__dlpack__") or hasattr(x, "__array_interface__") or hasattr(x, "__cuda_array_interface__")


class ArrayPair:
    """An ``(array, grad_array)`` pair given to an optimizer.

    The gradient array is permanent: the optimizer reads it in place at each
    step and ``zero_grad`` zeroes it in place (it can never become ``None``).
    """

    __slots__ = ("data", "_grad")

    def __init__(self, data, grad):
        if not is_array(data):
            raise TypeError(f"(array, grad) pair: the array must be an array, got {type(data).__name__}")
        if not is_array(grad):
            raise TypeError(f"(array, grad) pair: the grad must be an array, got {type(grad).__name__}")
        if tuple(data.shape) != tuple(grad.shape):
            raise ValueError(
                f"(array, grad) pair: grad shape {tuple(grad.shape)} differs from array shape {tuple(data.shape)}")
        self.data = data
        self._grad = grad

    @property
    def grad(self):
        return self._grad

    @property
    def shape(self) -> tuple:
        return tuple(self.data.shape)

    def __repr__(self) -> str:
        return f"ArrayPair(shape={self.shape}, dtype={self.data.dtype})"


def as_param(obj):
    """The object an optimizer keeps for ``obj``; TypeError / ValueError for what it cannot train."""
    if is_torch_tensor(obj):
        if not obj.is_leaf:
            raise ValueError("can't optimize a non-leaf Tensor")
        return obj
    if isinstance(obj, (Parameter, ArrayPair)):
        return obj
    if isinstance(obj, (tuple, list)) and len(obj) == 2 and is_array(obj[0]) and is_array(obj[1]):
        return ArrayPair(obj[0], obj[1])
    if isinstance(obj, np.ndarray) or is_array(obj):
        raise TypeError(
            "optimizer can't train a bare array (it has no gradient): pass a fusedlearn.nn.Parameter "
            "or an (array, grad_array) pair")
    raise TypeError(
        "optimizer can only optimize torch tensors, fusedlearn.nn.Parameter objects or (array, grad_array) "
        f"pairs, but one of the params is {type(obj).__name__}")


def identity(p) -> int:
    """What makes two params the same parameter (pairs: the same data array)."""
    return id(p.data) if isinstance(p, ArrayPair) else id(p)


def data_of(p):
    """The array the kernels update: the tensor itself for torch (the kernels
    read its storage directly, outside autograd, as torch's own optimizers
    step under no_grad), ``.data`` otherwise."""
    return p if is_torch_tensor(p) else p.data


def grad_of(p):
    """The gradient to read this step, or None (skip the param)."""
    g = p.grad
    if g is not None and is_torch_tensor(g) and not g.is_contiguous():
        g = g.detach().contiguous()
    return g


def zero_grad_of(p, set_to_none: bool) -> None:
    if isinstance(p, ArrayPair):
        fill_zero(p.grad)
        return
    if p.grad is None:
        return
    if set_to_none:
        p.grad = None
        return
    g = p.grad
    if is_torch_tensor(g):
        if g.grad_fn is not None:
            g.detach_()
        else:
            g.requires_grad_(False)
    fill_zero(g)


def fill_zero(a) -> None:
    if is_torch_tensor(a):
        a.zero_()
    else:
        a.fill(0)


def kind_of(a) -> tuple:
    """(device, dtype) of an array: arrays of one kind go into one fused call."""
    return getattr(a, "device", "cpu"), a.dtype


def _module_of(a):
    return sys.modules.get(type(a).__module__.split(".")[0], np)


def full_like(a, value: float):
    """A new C-contiguous array of ``a``'s type, device, dtype and shape, filled with ``value``."""
    if is_torch_tensor(a):
        return _torch().full_like(a, value, memory_format=_torch().contiguous_format)
    if isinstance(a, np.ndarray):
        return np.full_like(a, value, order="C")
    return _module_of(a).full_like(a, value)


def scalar_step(value, like=None) -> float:
    """The step counter as the optimizer keeps it while training: a Python float.

    (A 0-d tensor per parameter, as torch keeps it, costs a torch op per
    parameter per step to increment; ``Optimizer.state_dict`` writes torch's
    form for torch params.)"""
    return float(value)


def exported_step(value, like):
    """The step counter in the form torch keeps it (0-d float tensor) for torch params, a float otherwise."""
    if is_torch_tensor(like):
        t = _torch()
        dtype = t.float64 if t.get_default_dtype() == t.float64 else t.float32
        return t.tensor(float(value), dtype=dtype)
    return float(value)


def step_count(value) -> int:
    return int(round(float(value)))


def bump_step(state: dict) -> None:
    state["step"] = float(state["step"]) + 1.0


def copy_like(value, like):
    """A fresh contiguous copy of a loaded state array, cast to ``like``'s type, device and dtype."""
    if is_torch_tensor(like):
        t = _torch()
        src = value.detach() if is_torch_tensor(value) else t.as_tensor(np.asarray(value))
        out = src.to(device=like.device, dtype=like.dtype, copy=True)
        return out.contiguous()
    if isinstance(like, np.ndarray):
        if is_torch_tensor(value):
            value = value.detach().cpu().numpy()
        return np.array(value, dtype=like.dtype, order="C", copy=True)
    mod = _module_of(like)
    if is_torch_tensor(value):
        value = value.detach().cpu().numpy()
    return mod.array(value, dtype=like.dtype, copy=True)


def buckets(arrays) -> list:
    """Split arrays into lists of one (device, dtype): the grad utilities need one dtype per call."""
    out: dict = {}
    for a in arrays:
        out.setdefault(kind_of(a), []).append(a)
    return list(out.values())
