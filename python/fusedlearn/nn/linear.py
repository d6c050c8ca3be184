"""``Linear``: y = act(x @ W.T + b) through the fused GEMM kernels."""
from __future__ import annotations

import math

import numpy as np

from .. import functional as F
from . import init
from .activation import ACTIVATION_GRADS
from .module import InputGradOptional, Module, as_float_input
from .parameter import Parameter


class Linear(InputGradOptional, Module):
    """``torch.nn.Linear``: ``y = x @ weight.T + bias`` with ``weight`` of shape
    ``[out_features, in_features]`` and torch's default initialisation
    (``kaiming_uniform_(a=sqrt(5))`` for the weight, ``U(-1/sqrt(in), 1/sqrt(in))``
    for the bias).

    ``activation`` (``None``, ``'relu'``, ``'tanh'``, ``'sigmoid'``) is applied
    in the GEMM's epilogue, so ``Linear(..., activation='relu')`` equals
    ``Sequential(Linear(...), ReLU())`` in one pass over memory; the state dict
    is the same as torch's ``Linear``.  ``generator`` (a numpy Generator or a
    seed) makes the initialisation reproducible.

    The input may have any number of leading dimensions (``[..., in_features]``);
    float inputs of another precision are cast to the weight's dtype.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, *, activation=None,
                 dtype=np.float32, generator=None) -> None:
        super().__init__()
        if int(in_features) < 0 or int(out_features) < 0:
            raise ValueError(f"Linear: feature counts must be >= 0, got ({in_features}, {out_features})")
        if activation not in (None, "relu", "tanh", "sigmoid"):
            raise ValueError(f"Linear: activation must be None, 'relu', 'tanh' or 'sigmoid', got {activation!r}")
        dtype = np.dtype(dtype)
        if dtype.kind != "f":
            raise TypeError(f"Linear: dtype must be floating-point, got {dtype}")
        self.in_features = int(in_features)
        self.out_features = int(out_features)
        self.activation = activation
        self.weight = Parameter(np.empty((self.out_features, self.in_features), dtype))
        self.bias = Parameter(np.empty(self.out_features, dtype)) if bias else None
        if not bias:
            self.register_parameter("bias", None)
        self.reset_parameters(generator)
        self._x = None
        self._y = None
        self._lead = None

    def reset_parameters(self, generator=None) -> None:
        gen = init._rng(generator)
        init.kaiming_uniform_(self.weight, a=math.sqrt(5), generator=gen)
        if self.bias is not None:
            bound = 1.0 / math.sqrt(self.in_features) if self.in_features > 0 else 0.0
            init.uniform_(self.bias, -bound, bound, generator=gen)

    def extra_repr(self) -> str:
        act = f", activation={self.activation!r}" if self.activation else ""
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}{act}"

    def forward(self, x):
        x = as_float_input(x, f"{self!r}")
        if x.ndim < 1 or x.shape[-1] != self.in_features:
            raise ValueError(f"{self!r}: expected input of shape (..., {self.in_features}), got {x.shape}")
        w = self.weight.data
        lead = x.shape[:-1]
        x2 = np.ascontiguousarray(x.reshape(-1, self.in_features), dtype=w.dtype)
        b = None if self.bias is None else self.bias.data
        y = F.linear(x2, w, b, activation=self.activation)
        self._x, self._y, self._lead = x2, y, lead
        return y.reshape(*lead, self.out_features)

    def _backward(self, grad_out, input_grad):
        if self._x is None:
            raise RuntimeError(f"{self!r}: backward() called before forward()")
        g = np.asarray(grad_out)
        if g.shape != (*self._lead, self.out_features):
            raise ValueError(f"{self!r}.backward: grad_out has shape {g.shape}, the output had "
                             f"{(*self._lead, self.out_features)}")
        w = self.weight.data
        g = np.ascontiguousarray(g.reshape(-1, self.out_features), dtype=w.dtype)
        if self.activation is not None:
            g = np.ascontiguousarray(ACTIVATION_GRADS[self.activation](g, self._y))
        if self.weight.grad is None:  # dW = gY^T X: [out, N] @ [N, in]
            self.weight.grad = F.gemm(g, self._x, trans_a=True)
        else:
            F.gemm(g, self._x, self.weight.grad, trans_a=True, beta=1.0, out=self.weight.grad)
        if self.bias is not None:
            _accumulate(self.bias, g.sum(axis=0))
        if not input_grad:
            return None
        dx = F.gemm(g, w)  # [N, out] @ [out, in]
        return dx.reshape(*self._lead, self.in_features)


def _accumulate(p: Parameter, g: np.ndarray) -> None:
    """Add ``g`` into ``p.grad``, allocating it on first use."""
    if p.grad is None:
        p.grad = np.ascontiguousarray(g, dtype=p.data.dtype)
    else:
        p.grad += g
