"""``Embedding``: a lookup table of trainable vectors, as ``torch.nn.Embedding``."""
from __future__ import annotations

import numpy as np

from . import init
from .module import Module
from .parameter import Parameter


def as_index_array(idx, who: str) -> np.ndarray:
    """``idx`` as an int64 numpy array; TypeError naming ``who`` when it is not integer."""
    if hasattr(idx, "detach") and hasattr(idx, "cpu"):  # a torch tensor
        idx = idx.detach().cpu().numpy()
    a = np.asarray(idx)
    if a.dtype.kind not in "iu":
        raise TypeError(f"{who}: indices must be integers, got dtype {a.dtype}")
    return a.astype(np.int64, copy=False)


def scatter_add_rows(out: np.ndarray, idx: np.ndarray, rows: np.ndarray) -> None:
    """``out[idx[k]] += rows[k]`` for every k, repeated indices summed.

    Sorting the indices and summing each run with ``np.add.reduceat`` is one
    vectorised pass (about twice as fast as ``np.add.at`` here); every target row
    is written once.
    """
    if idx.size == 0:
        return
    order = np.argsort(idx, kind="stable")
    sorted_idx = idx[order]
    uniq, starts = np.unique(sorted_idx, return_index=True)
    out[uniq] += np.add.reduceat(rows[order], starts, axis=0)


class Embedding(Module):
    """``torch.nn.Embedding(num_embeddings, embedding_dim, padding_idx=None)``.

    ``weight`` ``[num_embeddings, embedding_dim]`` is drawn from N(0, 1); with
    ``padding_idx`` (negative values count from the end, as in torch) that row
    starts at zero and never receives a gradient, so it stays zero under any
    optimizer without weight decay.

    ``forward(idx)`` takes integer indices of any shape ``S`` and returns
    ``weight[idx]`` of shape ``S + (embedding_dim,)``; out-of-range indices
    raise ``IndexError`` (as torch does).  ``backward(grad_out)`` scatter-adds
    the rows of ``grad_out`` into ``weight.grad`` (repeated indices sum) and
    returns ``None``: integer inputs have no gradient.  ``_weight`` loads a
    given array (kept, as ``Parameter`` does) instead of drawing one.
    """

    def __init__(self, num_embeddings: int, embedding_dim: int, padding_idx=None, *, _weight=None,
                 dtype=np.float32, generator=None) -> None:
        super().__init__()
        for name, v in (("num_embeddings", num_embeddings), ("embedding_dim", embedding_dim)):
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
                raise TypeError(f"Embedding: {name} must be an integer, got {type(v).__name__}")
            if v < 0:
                raise ValueError(f"Embedding: {name} must be >= 0, got {v}")
        self.num_embeddings = int(num_embeddings)
        self.embedding_dim = int(embedding_dim)
        if padding_idx is not None:
            p = int(padding_idx)
            if not -self.num_embeddings <= p < self.num_embeddings:
                raise ValueError(f"Embedding: padding_idx must be within num_embeddings "
                                 f"({self.num_embeddings}), got {padding_idx}")
            padding_idx = p % self.num_embeddings
        self.padding_idx = padding_idx
        shape = (self.num_embeddings, self.embedding_dim)
        if _weight is not None:
            self.weight = Parameter(_weight)
            if self.weight.shape != shape:
                raise ValueError(f"Embedding: _weight has shape {self.weight.shape}, expected {shape}")
        else:
            dtype = np.dtype(dtype)
            if dtype.kind != "f":
                raise TypeError(f"Embedding: dtype must be floating-point, got {dtype}")
            self.weight = Parameter(np.empty(shape, dtype))
            self.reset_parameters(generator)
        self._idx = None

    def reset_parameters(self, generator=None) -> None:
        init.normal_(self.weight, 0.0, 1.0, generator=init._rng(generator))
        if self.padding_idx is not None:
            self.weight.data[self.padding_idx] = 0

    def extra_repr(self) -> str:
        pad = "" if self.padding_idx is None else f", padding_idx={self.padding_idx}"
        return f"{self.num_embeddings}, {self.embedding_dim}{pad}"

    def forward(self, idx):
        a = as_index_array(idx, f"{self!r}")
        if a.size and (a.min() < 0 or a.max() >= self.num_embeddings):
            bad = a[(a < 0) | (a >= self.num_embeddings)].flat[0]
            raise IndexError(f"{self!r}: index {int(bad)} is out of range [0, {self.num_embeddings})")
        self._idx = a
        return self.weight.data[a]

    def backward(self, grad_out):
        if self._idx is None:
            raise RuntimeError(f"{self!r}: backward() called before forward()")
        g = np.asarray(grad_out)
        expected = (*self._idx.shape, self.embedding_dim)
        if g.shape != expected:
            raise ValueError(f"{self!r}.backward: grad_out has shape {g.shape}, the output had {expected}")
        if not self.weight.requires_grad:
            return None
        idx = self._idx.reshape(-1)
        rows = g.reshape(-1, self.embedding_dim).astype(self.weight.dtype, copy=False)
        if self.padding_idx is not None:
            keep = idx != self.padding_idx
            idx, rows = idx[keep], rows[keep]
        if self.weight.grad is None:
            self.weight.grad = np.zeros_like(self.weight.data)
        scatter_add_rows(self.weight.grad, idx, rows)
        return None

    @classmethod
    def from_pretrained(cls, embeddings, freeze: bool = True, padding_idx=None) -> "Embedding":
        """An ``Embedding`` holding a copy of ``embeddings`` (2-D); ``freeze`` sets
        ``weight.requires_grad = False`` as in torch."""
        w = np.array(embeddings, copy=True)
        if w.ndim != 2:
            raise ValueError(f"Embedding.from_pretrained: embeddings must be 2-D, got shape {w.shape}")
        if w.dtype.kind != "f":
            raise TypeError(f"Embedding.from_pretrained: embeddings must be floating-point, got {w.dtype}")
        m = cls(w.shape[0], w.shape[1], padding_idx=padding_idx, _weight=np.ascontiguousarray(w))
        m.weight.requires_grad = not freeze
        return m
