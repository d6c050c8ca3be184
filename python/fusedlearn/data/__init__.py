"""Data sets and batching.

* :class:`ArrayDataset` — arrays ``x`` and ``y`` with seeded, shuffled batching;
* :func:`digits` — scikit-learn's bundled 8x8 digits with a fixed split;
* :func:`fashion_mnist` / :func:`mnist` — IDX files (gzip or not), Debian's
  ``dataset-fashion-mnist`` package found automatically;
* :func:`cifar10` — the CIFAR-10 binary batches;
* :func:`read_idx` / :func:`read_cifar10_batch` — the raw readers.
"""
from .dataset import ArrayDataset, as_dataset
from .readers import read_cifar10_batch, read_idx
from .sets import cifar10, digits, fashion_mnist, mnist
from . import augment

__all__ = ["ArrayDataset", "as_dataset", "read_idx", "read_cifar10_batch", "digits", "fashion_mnist", "mnist",
           "cifar10"]
__all__ += ["augment"]
