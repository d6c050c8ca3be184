"""Readers of the IDX format (MNIST, Fashion-MNIST) and of the CIFAR-10 binary batches."""
from __future__ import annotations

import gzip
import os

import numpy as np

# IDX type codes -> big-endian numpy dtypes
_IDX_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def _read_bytes(path) -> bytes:
    with open(path, "rb") as f:
        head = f.read(2)
    opener = gzip.open if head == b"\x1f\x8b" else open
    with opener(path, "rb") as f:
        return f.read()


def read_idx(path) -> np.ndarray:
    """An IDX file (gzip-compressed or not) as a numpy array in native byte order.

    Raises ``ValueError`` when the header is not IDX or the file is truncated.
    """
    raw = _read_bytes(path)
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_TYPES:
        raise ValueError(f"{os.fspath(path)}: not an IDX file (bad magic number)")
    dtype = np.dtype(_IDX_TYPES[raw[2]])
    ndim = raw[3]
    if len(raw) < 4 + 4 * ndim:
        raise ValueError(f"{os.fspath(path)}: truncated IDX header")
    dims = tuple(int(d) for d in np.frombuffer(raw, ">u4", ndim, 4))
    count = int(np.prod(dims)) if dims else 1
    offset = 4 + 4 * ndim
    need = offset + count * dtype.itemsize
    if len(raw) < need:
        raise ValueError(f"{os.fspath(path)}: truncated IDX data ({len(raw)} bytes, {need} expected for shape {dims})")
    arr = np.frombuffer(raw, dtype, count, offset).reshape(dims)
    return arr.astype(dtype.newbyteorder("="))


def read_cifar10_batch(path) -> tuple:
    """One CIFAR-10 binary batch (``data_batch_1.bin`` ...): records of a label byte and
    3072 pixel bytes (1024 red, 1024 green, 1024 blue, row-major 32x32).

    Returns ``(images uint8 [N, 3, 32, 32], labels int64 [N])``.
    """
    raw = _read_bytes(path)
    rec = 1 + 3 * 32 * 32
    if len(raw) == 0 or len(raw) % rec:
        raise ValueError(f"{os.fspath(path)}: size {len(raw)} is not a multiple of the CIFAR-10 record size {rec}")
    data = np.frombuffer(raw, np.uint8).reshape(-1, rec)
    labels = data[:, 0].astype(np.int64)
    if labels.max(initial=0) > 9:
        raise ValueError(f"{os.fspath(path)}: label {int(labels.max())} out of range for CIFAR-10")
    return data[:, 1:].reshape(-1, 3, 32, 32).copy(), labels
