"""Data sets: scikit-learn's digits, (Fashion-)MNIST from IDX files, CIFAR-10 binary batches.

Each returns ``(train, test)`` :class:`ArrayDataset` pairs with float32 inputs
scaled to [0, 1] and int64 labels.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .dataset import ArrayDataset
from .readers import read_cifar10_batch, read_idx

FASHION_MNIST_DIRS = ("/usr/share/datasets/fashion-mnist",)
_IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def digits(test_size: int = 359, seed: int = 0, flatten: bool = True) -> tuple:
    """scikit-learn's bundled 8x8 handwritten digits (1797 samples, 10 classes), offline.

    A fixed stratified split (``seed``) into 1438 training and ``test_size`` = 359
    test samples; pixels scaled from 0..16 to [0, 1] as float32.  ``flatten``:
    inputs ``[N, 64]``, else ``[N, 1, 8, 8]``.
    """
    try:
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split
    except ImportError as exc:  # pragma: no cover - scikit-learn is a dependency
        raise ImportError("fusedlearn.data.digits needs scikit-learn: pip install scikit-learn") from exc
    d = load_digits()
    x = (d.data / 16.0).astype(np.float32)
    y = d.target.astype(np.int64)
    xtr, xte, ytr, yte = train_test_split(x, y, test_size=test_size, random_state=seed, stratify=y)
    if not flatten:
        xtr, xte = xtr.reshape(-1, 1, 8, 8), xte.reshape(-1, 1, 8, 8)
    return ArrayDataset(np.ascontiguousarray(xtr), ytr), ArrayDataset(np.ascontiguousarray(xte), yte)


def _find_idx(directory: Path, stem: str):
    for name in (stem, stem + ".gz", stem.replace("-idx", ".idx"), stem.replace("-idx", ".idx") + ".gz"):
        p = directory / name
        if p.is_file():
            return p
    return None


def _idx_sets(directory: Path, flatten: bool) -> tuple:
    out = []
    for split in ("train", "test"):
        img_stem, lbl_stem = _IDX_FILES[split]
        img, lbl = _find_idx(directory, img_stem), _find_idx(directory, lbl_stem)
        images, labels = read_idx(img), read_idx(lbl).astype(np.int64)
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise ValueError(f"{directory}: {split} images {images.shape} and labels {labels.shape} do not match")
        x = images.astype(np.float32) / np.float32(255.0)
        x = x.reshape(len(x), -1) if flatten else x.reshape(len(x), 1, *images.shape[1:])
        out.append(ArrayDataset(np.ascontiguousarray(x), labels))
    return tuple(out)


def _has_idx(directory: Path) -> bool:
    return all(_find_idx(directory, s) is not None for pair in _IDX_FILES.values() for s in pair)


def fashion_mnist(path=None, flatten: bool = False) -> tuple:
    """Fashion-MNIST (60000 + 10000 images of 28x28, 10 classes) from its IDX files.

    Looked for in ``path``, then ``$FUSEDLEARN_FASHION_MNIST``, then where Debian's
    ``dataset-fashion-mnist`` package installs them (``/usr/share/datasets/fashion-mnist``).
    Inputs ``[N, 1, 28, 28]`` (``flatten``: ``[N, 784]``) in [0, 1].
    """
    candidates = [path] if path is not None else [os.environ.get("FUSEDLEARN_FASHION_MNIST"), *FASHION_MNIST_DIRS]
    for c in candidates:
        if c and _has_idx(Path(c)):
            return _idx_sets(Path(c), flatten)
    where = os.fspath(path) if path is not None else ", ".join(str(c) for c in candidates if c)
    raise FileNotFoundError(
        f"Fashion-MNIST IDX files (train-images-idx3-ubyte[.gz], ...) not found in {where}. "
        "Install them with `apt-get install dataset-fashion-mnist` (Debian/Ubuntu) or download them from "
        "https://github.com/zalandoresearch/fashion-mnist and pass path=")


def mnist(path) -> tuple:
    """MNIST from a directory holding its four IDX files (gzip or not). Inputs ``[N, 1, 28, 28]``."""
    directory = Path(path)
    if not _has_idx(directory):
        raise FileNotFoundError(f"MNIST IDX files (train-images-idx3-ubyte[.gz], train-labels-idx1-ubyte[.gz], "
                                f"t10k-...) not found in {directory}")
    return _idx_sets(directory, flatten=False)


def cifar10(path) -> tuple:
    """CIFAR-10 from the binary version's directory (``data_batch_1.bin`` .. ``_5``, ``test_batch.bin``).

    Inputs float32 ``[N, 3, 32, 32]`` in [0, 1]; missing training batches are
    skipped, but at least one and the test batch must exist.
    """
    directory = Path(path)
    train_files = [directory / f"data_batch_{i}.bin" for i in range(1, 6)]
    train_files = [f for f in train_files if f.is_file()]
    test_file = directory / "test_batch.bin"
    if not train_files or not test_file.is_file():
        raise FileNotFoundError(f"CIFAR-10 binary batches (data_batch_N.bin, test_batch.bin) not found in {directory}")
    parts = [read_cifar10_batch(f) for f in train_files]
    xtr = np.concatenate([p[0] for p in parts]).astype(np.float32) / np.float32(255.0)
    ytr = np.concatenate([p[1] for p in parts])
    xte, yte = read_cifar10_batch(test_file)
    return ArrayDataset(xtr, ytr), ArrayDataset(xte.astype(np.float32) / np.float32(255.0), yte)
