"""``ArrayDataset``: inputs and targets held as arrays, served in (shuffled) batches."""
from __future__ import annotations

import numpy as np


class ArrayDataset:
    """Samples ``(x[i], y[i])``; ``y`` may be ``None`` (unlabelled data).

    ``batches(batch_size, shuffle=False, seed=None)`` yields ``(xb, yb)``
    pairs; with ``shuffle`` the order is a permutation drawn from ``seed``
    (an int, or a ``numpy.random.Generator`` whose state advances).
    """

    def __init__(self, x, y=None) -> None:
        x = np.asarray(x)
        if x.ndim == 0:
            raise ValueError("ArrayDataset: x must have a sample dimension, got a scalar")
        if y is not None:
            y = np.asarray(y)
            if y.ndim == 0 or len(y) != len(x):
                raise ValueError(f"ArrayDataset: x has {len(x)} samples but y has "
                                 f"{'no sample dimension' if y.ndim == 0 else len(y)}")
        self.x = x
        self.y = y

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, idx):
        if self.y is None:
            return self.x[idx]
        return self.x[idx], self.y[idx]

    def __repr__(self) -> str:
        ys = "None" if self.y is None else f"{self.y.shape} {self.y.dtype}"
        return f"ArrayDataset(x={self.x.shape} {self.x.dtype}, y={ys})"

    def num_batches(self, batch_size: int, drop_last: bool = False) -> int:
        n = len(self)
        return n // batch_size if drop_last else -(-n // batch_size)

    def batches(self, batch_size: int, shuffle: bool = False, seed=None, drop_last: bool = False):
        """Yield ``(xb, yb)`` (or ``xb`` when unlabelled) of at most ``batch_size`` samples."""
        batch_size = int(batch_size)
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        n = len(self)
        if shuffle:
            rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
            order = rng.permutation(n)
        else:
            order = None
        stop = n - n % batch_size if drop_last else n
        for start in range(0, stop, batch_size):
            sel = slice(start, start + batch_size) if order is None else order[start:start + batch_size]
            xb = self.x[sel]
            if self.y is None:
                yield xb
            else:
                yield xb, self.y[sel]

    def split(self, fraction: float, seed=0):
        """Two datasets: a random ``fraction`` of the samples and the rest."""
        n = len(self)
        k = int(round(n * float(fraction)))
        order = np.random.default_rng(seed).permutation(n)
        a, b = np.sort(order[:k]), np.sort(order[k:])
        mk = (lambda i: ArrayDataset(self.x[i], None if self.y is None else self.y[i]))
        return mk(a), mk(b)


def as_dataset(data, what: str = "data") -> ArrayDataset:
    """An ``ArrayDataset`` from a dataset or an ``(x, y)`` pair."""
    if isinstance(data, ArrayDataset):
        return data
    if isinstance(data, (tuple, list)) and len(data) == 2:
        return ArrayDataset(data[0], data[1])
    raise TypeError(f"{what} must be an ArrayDataset or an (x, y) pair, got {type(data).__name__}")


def labelled_dataset(data, who: str, what: str, allow_empty: bool = False) -> ArrayDataset:
    """``as_dataset(data)`` that must have targets (and, unless ``allow_empty``, samples);
    ``ValueError("<who>: <what> needs targets (y)")`` / ``"... is empty"`` otherwise."""
    ds = as_dataset(data, what)
    if ds.y is None:
        raise ValueError(f"{who}: {what} needs targets (y)")
    if not allow_empty and len(ds) == 0:
        raise ValueError(f"{who}: {what} is empty")
    return ds
