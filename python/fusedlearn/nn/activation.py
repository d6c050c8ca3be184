"""Element-wise activations.  Each caches its output: the derivative of relu,
tanh and sigmoid is a function of the output alone."""
from __future__ import annotations

import numpy as np

from .module import Module, as_float_input


def relu_grad(grad_out: np.ndarray, y: np.ndarray) -> np.ndarray:
    return np.where(y > 0, grad_out, np.zeros((), grad_out.dtype))


def tanh_grad(grad_out: np.ndarray, y: np.ndarray) -> np.ndarray:
    return grad_out * (1 - y * y)


def sigmoid_grad(grad_out: np.ndarray, y: np.ndarray) -> np.ndarray:
    return grad_out * (y * (1 - y))


def sigmoid(x: np.ndarray) -> np.ndarray:
    """A logistic function that neither overflows nor loses precision for large |x|."""
    return 0.5 * (1 + np.tanh(0.5 * x))


ACTIVATION_GRADS = {"relu": relu_grad, "tanh": tanh_grad, "sigmoid": sigmoid_grad}


class _Activation(Module):
    name = ""

    def __init__(self) -> None:
        super().__init__()
        self._y = None

    def _f(self, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def forward(self, x):
        x = as_float_input(x, type(self).__name__)
        self._y = self._f(x)
        return self._y

    def backward(self, grad_out):
        if self._y is None:
            raise RuntimeError(f"{type(self).__name__}.backward() called before forward()")
        if np.shape(grad_out) != self._y.shape:
            raise ValueError(f"{type(self).__name__}.backward: grad_out has shape {np.shape(grad_out)}, "
                             f"the output had {self._y.shape}")
        return ACTIVATION_GRADS[self.name](np.asarray(grad_out, self._y.dtype), self._y)


class ReLU(_Activation):
    """max(x, 0)."""
    name = "relu"

    def _f(self, x):
        return np.maximum(x, np.zeros((), x.dtype))


class Tanh(_Activation):
    name = "tanh"

    def _f(self, x):
        return np.tanh(x)


class Sigmoid(_Activation):
    """1 / (1 + exp(-x))."""
    name = "sigmoid"

    def _f(self, x):
        return sigmoid(x)
