"""Shape and regularisation layers: ``Dropout``, ``Flatten``, ``Identity``."""
from __future__ import annotations

import numpy as np

from .module import Module, as_float_input


class Identity(Module):
    def forward(self, x):
        return x

    def backward(self, grad_out):
        return grad_out


class Dropout(Module):
    """Inverted dropout (``torch.nn.Dropout``): in training each element is zeroed with
    probability ``p`` and the rest scaled by ``1 / (1 - p)``; identity in eval mode.

    The masks come from the layer's own ``numpy.random.Generator`` seeded with
    ``seed``, so a run is reproducible; :meth:`manual_seed` reseeds it and
    :meth:`get_rng_state` / :meth:`set_rng_state` save and restore it (checkpoints
    do this, so a resumed run draws the same masks).
    """

    def __init__(self, p: float = 0.5, seed=None) -> None:
        super().__init__()
        p = float(p)
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"Dropout: p must be in [0, 1], got {p}")
        self.p = p
        self._rng = np.random.default_rng(seed)
        self._mask = None

    def extra_repr(self) -> str:
        return f"p={self.p}"

    def manual_seed(self, seed) -> None:
        self._rng = np.random.default_rng(seed)

    def get_rng_state(self) -> dict:
        return self._rng.bit_generator.state

    def set_rng_state(self, state: dict) -> None:
        self._rng.bit_generator.state = state

    def forward(self, x):
        x = as_float_input(x, f"{self!r}")
        if not self.training or self.p == 0.0:
            self._mask = None
            return x
        if self.p == 1.0:
            self._mask = np.zeros(x.shape, x.dtype)
        else:
            keep = self._rng.random(x.shape) >= self.p
            self._mask = keep.astype(x.dtype) * x.dtype.type(1.0 / (1.0 - self.p))
        return x * self._mask

    def backward(self, grad_out):
        if self._mask is None:
            return grad_out
        if np.shape(grad_out) != self._mask.shape:
            raise ValueError(f"{self!r}.backward: grad_out has shape {np.shape(grad_out)}, "
                             f"the output had {self._mask.shape}")
        return grad_out * self._mask


class Flatten(Module):
    """``torch.nn.Flatten``: merge dimensions ``start_dim`` .. ``end_dim`` into one."""

    def __init__(self, start_dim: int = 1, end_dim: int = -1) -> None:
        super().__init__()
        self.start_dim = int(start_dim)
        self.end_dim = int(end_dim)
        self._shape = None

    def extra_repr(self) -> str:
        return f"start_dim={self.start_dim}, end_dim={self.end_dim}"

    def forward(self, x):
        x = as_float_input(x, f"{self!r}")
        nd = x.ndim
        s = self.start_dim + nd if self.start_dim < 0 else self.start_dim
        e = self.end_dim + nd if self.end_dim < 0 else self.end_dim
        if not (0 <= s < max(nd, 1) and 0 <= e < max(nd, 1)) or s > e:
            raise ValueError(f"{self!r}: cannot flatten dimensions {self.start_dim}..{self.end_dim} "
                             f"of an input of shape {x.shape}")
        self._shape = x.shape
        if nd == 0:
            return x.reshape(1)
        return x.reshape(*x.shape[:s], -1 if x.size else int(np.prod(x.shape[s:e + 1])), *x.shape[e + 1:])

    def backward(self, grad_out):
        if self._shape is None:
            raise RuntimeError(f"{self!r}: backward() called before forward()")
        return np.reshape(grad_out, self._shape)
