"""Pooling layers with torch's names and defaults: ``MaxPool2d``, ``AvgPool2d``, ``AdaptiveAvgPool2d``."""
from __future__ import annotations

import numpy as np

from .. import functional as F
from .module import Module, as_float_input


class _Pool(Module):
    def _input(self, x):
        x = as_float_input(x, type(self).__name__)
        if x.ndim not in (3, 4):
            raise ValueError(f"{type(self).__name__}: expected a 3-D (C, H, W) or 4-D (N, C, H, W) input, "
                             f"got shape {x.shape}")
        return np.ascontiguousarray(x)

    def _grad(self, grad_out):
        if self._out_shape is None:
            raise RuntimeError(f"{type(self).__name__}: backward() called before forward()")
        g = np.asarray(grad_out)
        if g.shape != self._out_shape:
            raise ValueError(f"{type(self).__name__}.backward: grad_out has shape {g.shape}, "
                             f"the output had {self._out_shape}")
        return np.ascontiguousarray(g, dtype=self._dtype)


class MaxPool2d(_Pool):
    """``torch.nn.MaxPool2d(kernel_size, stride=None, padding=0, dilation=1, return_indices=False,
    ceil_mode=False)``; the backward routes each gradient to its window's maximum."""

    def __init__(self, kernel_size, stride=None, padding=0, dilation=1, return_indices: bool = False,
                 ceil_mode: bool = False) -> None:
        super().__init__()
        self.kernel_size, self.stride, self.padding, self.dilation = kernel_size, stride, padding, dilation
        F.conv._pool_args(kernel_size, stride, padding, dilation)  # TypeError early
        self.return_indices = bool(return_indices)
        self.ceil_mode = bool(ceil_mode)
        self._idx = self._in_shape = self._out_shape = None

    def extra_repr(self) -> str:
        return (f"kernel_size={self.kernel_size}, stride={self.stride if self.stride is not None else self.kernel_size}, "
                f"padding={self.padding}, dilation={self.dilation}, ceil_mode={self.ceil_mode}")

    def forward(self, x):
        x = self._input(x)
        y, idx = F.max_pool2d(x, self.kernel_size, self.stride, self.padding, self.dilation, self.ceil_mode, True)
        self._idx, self._in_shape, self._out_shape, self._dtype = idx, x.shape, y.shape, x.dtype
        return (y, idx) if self.return_indices else y

    def backward(self, grad_out):
        g = self._grad(grad_out)
        return F.max_pool2d_backward(g, self._idx, self._in_shape, self.kernel_size, self.stride, self.padding,
                                     self.dilation, self.ceil_mode)


class AvgPool2d(_Pool):
    """``torch.nn.AvgPool2d(kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
    divisor_override=None)``."""

    def __init__(self, kernel_size, stride=None, padding=0, ceil_mode: bool = False, count_include_pad: bool = True,
                 divisor_override=None) -> None:
        super().__init__()
        F.conv._pool_args(kernel_size, stride, padding)
        self.kernel_size, self.stride, self.padding = kernel_size, stride, padding
        self.ceil_mode, self.count_include_pad = bool(ceil_mode), bool(count_include_pad)
        self.divisor_override = divisor_override
        self._in_shape = self._out_shape = None

    def extra_repr(self) -> str:
        return (f"kernel_size={self.kernel_size}, stride={self.stride if self.stride is not None else self.kernel_size}, "
                f"padding={self.padding}")

    def _args(self):
        return (self.kernel_size, self.stride, self.padding, self.ceil_mode, self.count_include_pad,
                self.divisor_override)

    def forward(self, x):
        x = self._input(x)
        y = F.avg_pool2d(x, *self._args())
        self._in_shape, self._out_shape, self._dtype = x.shape, y.shape, x.dtype
        return y

    def backward(self, grad_out):
        return F.avg_pool2d_backward(self._grad(grad_out), self._in_shape, *self._args())


class AdaptiveAvgPool2d(_Pool):
    """``torch.nn.AdaptiveAvgPool2d(output_size)`` for output sizes that divide the input
    (``AdaptiveAvgPool2d(1)``: global average pooling)."""

    def __init__(self, output_size) -> None:
        super().__init__()
        self.output_size = output_size
        self._in_shape = self._out_shape = None

    def extra_repr(self) -> str:
        return f"output_size={self.output_size}"

    def forward(self, x):
        x = self._input(x)
        y = F.adaptive_avg_pool2d(x, self.output_size)
        self._in_shape, self._out_shape, self._dtype = x.shape, y.shape, x.dtype
        return y

    def backward(self, grad_out):
        return F.adaptive_avg_pool2d_backward(self._grad(grad_out), self._in_shape, self.output_size)
