"""A trainable numpy array and its gradient."""
from __future__ import annotations

import numpy as np


class Parameter:
    """A trainable array: ``data`` (a C-contiguous numpy array, updated in place by
    the optimizers) and ``grad`` (an array of the same shape, or ``None`` when no
    gradient has been computed since the last ``zero_grad``).

    ``Parameter(data)`` keeps ``data`` itself when it is already a C-contiguous
    floating-point numpy array (so the caller's array is the one trained);
    other sequences are converted, non-floating ones to float32.  Integer or
    boolean numpy arrays are refused, as torch refuses gradients for them.
    """

    def __init__(self, data, requires_grad: bool = True):
        if isinstance(data, Parameter):
            data = data.data
        if isinstance(data, np.ndarray):
            if data.dtype.kind != "f":
                raise TypeError(f"Parameter: data must be a floating-point array, got dtype {data.dtype}")
            arr = data if data.flags.c_contiguous else np.ascontiguousarray(data)
        else:
            arr = np.asarray(data)
            if arr.dtype.kind != "f":
                arr = arr.astype(np.float32)
            arr = np.ascontiguousarray(arr)
        self.data = arr
        self.grad = None
        self.requires_grad = bool(requires_grad)

    @property
    def shape(self) -> tuple:
        return self.data.shape

    @property
    def dtype(self) -> np.dtype:
        return self.data.dtype

    @property
    def ndim(self) -> int:
        return self.data.ndim

    @property
    def size(self) -> int:
        return self.data.size

    def numel(self) -> int:
        return self.data.size

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Forget the gradient (``grad = None``) or, with ``set_to_none=False``, zero it in place."""
        if self.grad is None:
            return
        if set_to_none:
            self.grad = None
        else:
            self.grad.fill(0)

    def __array__(self, dtype=None, copy=None):
        if dtype is not None and np.dtype(dtype) != self.data.dtype:
            return self.data.astype(dtype)
        return self.data.copy() if copy else self.data

    def __repr__(self) -> str:
        return f"Parameter(shape={self.data.shape}, dtype={self.data.dtype}, requires_grad={self.requires_grad})"
