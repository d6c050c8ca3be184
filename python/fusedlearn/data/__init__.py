"""Data sets and batching.

* :class:`ArrayDataset` — arrays ``x`` and ``y`` with seeded, shuffled batching;
* :func:`digits` — scikit-learn's bundled 8x8 digits with a fixed split;
* :func:`fashion_mnist` / :func:`mnist` — IDX files (gzip or not), Debian's
  ``dataset-fashion-mnist`` package found automatically;
* :func:`cifar10` — the CIFAR-10 binary batches;
* :func:`mackey_glass`, :func:`adding_problem`, :func:`copy_task`, :func:`char_text` /
  :func:`batchify` — sequence data for recurrent networks (time-major ``[T, N, ...]``);
* :func:`read_idx` / :func:`read_cifar10_batch` — the raw readers.
"""
from .dataset import ArrayDataset, as_dataset
from .readers import read_cifar10_batch, read_idx
from .sets import cifar10, digits, fashion_mnist, mnist
from .sequences import adding_problem, batchify, char_text, copy_task, mackey_glass
from . import augment

__all__ = ["ArrayDataset", "as_dataset", "read_idx", "read_cifar10_batch", "digits", "fashion_mnist", "mnist",
           "cifar10"]
__all__ += ["mackey_glass", "adding_problem", "copy_task", "char_text", "batchify"]
__all__ += ["augment"]
