"""``Conv2d`` and ``Dropout2d``: torch's layers with an explicit backward.

``Conv2d`` runs :func:`fusedlearn.functional.conv2d` (im2col bands + the fused
GEMM, or a direct depthwise kernel); an optional ``activation`` is applied in
the GEMM epilogue, so ``Conv2d(..., activation='relu')`` is
``Sequential(Conv2d(...), ReLU())`` in one pass over memory with the same
state dict as torch's ``Conv2d``.
"""
from __future__ import annotations

import math

import numpy as np

from .. import functional as F
from . import init
from .layers import Dropout
from .module import InputGradOptional, Module, as_float_input
from .parameter import Parameter


class Conv2d(InputGradOptional, Module):
    """``torch.nn.Conv2d`` (``padding_mode='zeros'``): weight ``[out_channels, in_channels // groups, kH, kW]``,
    bias ``[out_channels]``, torch's initialisation (``kaiming_uniform_(a=sqrt(5))``, bias
    ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))`` with ``fan_in = in_channels // groups * kH * kW``).

    ``activation`` (None, 'relu', 'tanh', 'sigmoid') is fused into the forward
    pass; ``generator`` (numpy Generator or seed) makes the initialisation reproducible.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0, dilation=1,
                 groups: int = 1, bias: bool = True, padding_mode: str = "zeros", device=None, dtype=None, *,
                 activation=None, generator=None) -> None:
        super().__init__()
        if padding_mode != "zeros":
            raise ValueError(f"Conv2d: only padding_mode='zeros' is implemented, got {padding_mode!r}")
        if device is not None and str(getattr(device, "type", device)).split(":")[0] != "cpu":
            raise ValueError(f"Conv2d: modules run on the CPU only for now, got device={device!r}")
        if isinstance(groups, bool) or int(groups) <= 0:
            raise ValueError(f"Conv2d: groups must be a positive integer, got {groups!r}")
        groups = int(groups)
        if int(in_channels) <= 0 or int(out_channels) <= 0:
            raise ValueError(f"Conv2d: channel counts must be positive, got ({in_channels}, {out_channels})")
        if in_channels % groups:
            raise ValueError("in_channels must be divisible by groups")
        if out_channels % groups:
            raise ValueError("out_channels must be divisible by groups")
        if activation not in (None, "relu", "tanh", "sigmoid"):
            raise ValueError(f"Conv2d: activation must be None, 'relu', 'tanh' or 'sigmoid', got {activation!r}")
        dtype = np.dtype(np.float32 if dtype is None else dtype)
        if dtype.kind != "f":
            raise TypeError(f"Conv2d: dtype must be floating-point, got {dtype}")
        self.in_channels, self.out_channels = int(in_channels), int(out_channels)
        self.kernel_size = F.conv._pair(kernel_size, "kernel_size")
        if min(self.kernel_size) <= 0:
            raise ValueError(f"Conv2d: kernel_size must be positive, got {kernel_size!r}")
        self.stride = F.conv._pair(stride, "stride")
        self.dilation = F.conv._pair(dilation, "dilation")
        if isinstance(padding, str):
            if padding not in ("valid", "same"):
                raise ValueError(f"Invalid padding string {padding!r}, should be one of ['valid', 'same']")
            if padding == "same" and self.stride != (1, 1):
                raise ValueError("padding='same' is not supported for strided convolutions")
            self.padding = padding
        else:
            self.padding = F.conv._pair(padding, "padding")
        F.conv._check_geometry(self.stride, (0, 0) if isinstance(self.padding, str) else self.padding,
                               self.dilation, stride, padding, dilation)
        self.groups = groups
        self.padding_mode = padding_mode
        self.activation = activation
        self.weight = Parameter(np.empty((self.out_channels, self.in_channels // groups, *self.kernel_size), dtype))
        if bias:
            self.bias = Parameter(np.empty(self.out_channels, dtype))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters(generator)
        self._x = self._y = None

    def reset_parameters(self, generator=None) -> None:
        gen = init._rng(generator)
        init.kaiming_uniform_(self.weight, a=math.sqrt(5), generator=gen)
        if self.bias is not None:
            fan_in = self.weight.shape[1] * self.kernel_size[0] * self.kernel_size[1]
            bound = 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0
            init.uniform_(self.bias, -bound, bound, generator=gen)

    def extra_repr(self) -> str:
        s = f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}"
        if self.padding not in ((0, 0), "valid"):
            s += f", padding={self.padding}"
        if self.dilation != (1, 1):
            s += f", dilation={self.dilation}"
        if self.groups != 1:
            s += f", groups={self.groups}"
        if self.bias is None:
            s += ", bias=False"
        if self.activation:
            s += f", activation={self.activation!r}"
        return s

    def _geometry(self):
        return self.stride, self.padding, self.dilation, self.groups

    def forward(self, x):
        x = as_float_input(x, f"{type(self).__name__}")
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"{type(self).__name__}: expected input of shape (N, {self.in_channels}, H, W), "
                             f"got {x.shape}")
        w = self.weight.data
        x = np.ascontiguousarray(x, dtype=w.dtype)
        b = None if self.bias is None else self.bias.data
        y = F.conv2d(x, w, b, *self._geometry(), activation=self.activation)
        self._x, self._y = x, y
        return y

    def _backward(self, grad_out, input_grad):
        if self._x is None:
            raise RuntimeError(f"{type(self).__name__}: backward() called before forward()")
        g = np.asarray(grad_out)
        if g.shape != self._y.shape:
            raise ValueError(f"{type(self).__name__}.backward: grad_out has shape {g.shape}, "
                             f"the output had {self._y.shape}")
        g = np.ascontiguousarray(g, dtype=self.weight.data.dtype)
        has_b = self.bias is not None
        acc = self.weight.grad is not None and (not has_b or self.bias.grad is not None)
        gx, gw, gb = F.conv2d_backward(
            g, self._x, self.weight.data, *self._geometry(), output=self._y, activation=self.activation,
            input_grad=input_grad, bias_grad=has_b, grad_weight=self.weight.grad if acc else None,
            grad_bias=(self.bias.grad if acc and has_b else None), accumulate=acc)
        self.weight.grad = gw
        if has_b:
            self.bias.grad = gb
        return gx


class Dropout2d(Dropout):
    """``torch.nn.Dropout2d``: zero whole channels (``x[n, c]``) with probability ``p`` in training,
    scaling the rest by ``1 / (1 - p)``; identity in eval mode.  Input ``(N, C, H, W)`` or ``(C, H, W)``."""

    def __init__(self, p: float = 0.5, inplace: bool = False, seed=None) -> None:
        super().__init__(p, seed)
        self.inplace = bool(inplace)

    def forward(self, x):
        x = as_float_input(x, f"{self!r}")
        if x.ndim not in (3, 4):
            raise ValueError(f"{self!r}: expected a 3-D (C, H, W) or 4-D (N, C, H, W) input, got shape {x.shape}")
        if not self.training or self.p == 0.0:
            self._mask = None
            return x
        shape = x.shape[:-2] + (1, 1)
        if self.p == 1.0:
            m = np.zeros(shape, x.dtype)
        else:
            m = (self._rng.random(shape) >= self.p).astype(x.dtype) * x.dtype.type(1.0 / (1.0 - self.p))
        self._mask = np.broadcast_to(m, x.shape)
        return x * m
