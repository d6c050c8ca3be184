"""Containers: ``Sequential`` and ``Residual``."""
from __future__ import annotations

from collections import OrderedDict

import numpy as np

from .module import InputGradOptional, Module


def _reraise(exc: Exception, where: str):
    """Re-raise a ValueError / TypeError with the container path prefixed."""
    if type(exc) in (ValueError, TypeError):
        raise type(exc)(f"{where}: {exc}") from exc
    raise exc


class Sequential(InputGradOptional, Module):
    """``torch.nn.Sequential``: modules applied in order; ``backward`` runs them in reverse.

    Built from modules (named ``"0"``, ``"1"``, ...) or from one ``OrderedDict``.
    ``model[i]`` is a layer, ``model[i:j]`` a ``Sequential`` holding the same
    layer objects (and parameters) under the same names, as in torch.
    """

    def __init__(self, *args) -> None:
        super().__init__()
        if len(args) == 1 and isinstance(args[0], OrderedDict):
            for name, m in args[0].items():
                self.add_module(str(name), m)
        else:
            for i, m in enumerate(args):
                if not isinstance(m, Module):
                    raise TypeError(f"Sequential: argument {i} is not a Module ({type(m).__name__})")
                self.add_module(str(i), m)

    def __len__(self) -> int:
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules.values())

    def __getitem__(self, idx):
        items = list(self._modules.items())
        if isinstance(idx, slice):
            return Sequential(OrderedDict(items[idx]))
        try:
            i = int(idx)
        except TypeError:
            raise TypeError(f"Sequential indices must be integers or slices, not {type(idx).__name__}") from None
        if not -len(items) <= i < len(items):
            raise IndexError(f"index {i} is out of range for a Sequential of length {len(items)}")
        return items[i][1]

    def append(self, module: Module) -> "Sequential":
        self.add_module(str(len(self)), module)
        return self

    def forward(self, x):
        for name, m in self._modules.items():
            try:
                x = m(x)
            except (ValueError, TypeError) as exc:
                _reraise(exc, f"Sequential layer {name}")
        return x

    def _backward(self, grad_out, input_grad):  # backward_params: the first layer skips its input gradient
        g = grad_out
        items = list(self._modules.items())
        for i in range(len(items) - 1, -1, -1):
            name, m = items[i]
            try:
                if i == 0 and not input_grad:
                    m.backward_params(g)
                    return None
                g = m.backward(g)
            except (ValueError, TypeError) as exc:
                _reraise(exc, f"Sequential layer {name} (backward)")
        return g


class Residual(Module):
    """``y = x + block(x)`` (the identity shortcut of He et al.); the block must keep the shape.

    The parameters are named ``block.<name>``.
    """

    def __init__(self, block: Module) -> None:
        super().__init__()
        if not isinstance(block, Module):
            raise TypeError(f"Residual: block must be a Module, got {type(block).__name__}")
        self.block = block

    def forward(self, x):
        try:
            fx = self.block(x)
        except (ValueError, TypeError) as exc:
            _reraise(exc, "Residual block")
        x = np.asarray(x)
        if fx.shape != x.shape:
            raise ValueError(f"Residual: the block maps shape {x.shape} to {fx.shape}; "
                             "a residual block must keep the shape")
        return x + fx

    def backward(self, grad_out):
        return grad_out + self.block.backward(grad_out)
