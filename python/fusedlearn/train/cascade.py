"""Deep cascade learning (Marquez, Hare & Niranjan, IEEE TNNLS 29(11), 2018): :func:`cascade`.

A network ``blocks[0], blocks[1], ...`` is trained one block at a time.  Stage ``i``
trains ``blocks[i]`` followed by a fresh output head on the *pseudo-inputs* of the
stage: the training (and validation) set passed once through the already trained,
frozen ``blocks[:i]``.  Then the head is dropped, ``blocks[i]`` is frozen (eval mode,
so its BatchNorm layers use their running statistics from then on) and its outputs
over the pseudo-inputs become the next stage's pseudo-inputs.  Only the stage being
trained holds activations, gradients and optimizer state; the frozen blocks run once
per stage over the data, never during the stage's epochs.

Each stage is one :func:`fusedlearn.train.fit` call (progress bar, validation,
callbacks, scheduler, CSV / JSON history and PNG plot are fit's).  The pseudo-inputs
are kept in memory, or in a ``numpy.memmap`` file in a temporary directory when they
need more than ``max_memory_bytes``; that directory is removed at the end, also when
training fails.  See ``docs/math/cascade.md``.
"""
from __future__ import annotations

import os
import shutil
import tempfile
import time
from typing import NamedTuple

import numpy as np

from ..data.dataset import ArrayDataset, labelled_dataset
from ..nn.container import Sequential
from ..nn.layers import Flatten
from ..nn.linear import Linear
from ..nn.module import Module
from ..nn.pool import AdaptiveAvgPool2d
from .loop import fit

#: ``max_memory_bytes=None``: a quarter of the machine's physical memory (2 GiB when unknown).
DEFAULT_MEMORY_FRACTION = 0.25
_FALLBACK_MEMORY_BYTES = 2 << 30


class CascadeResult(NamedTuple):
    """What :func:`cascade` returns.

    ``model``: ``Sequential(*blocks, last_head)`` in eval mode (the blocks are the
    caller's own objects, trained in place); ``histories``: one :func:`fit` history per
    stage; ``stages``: one dict per stage with ``input_shape`` / ``output_shape`` (per
    sample), ``cache`` (``"memory"`` or ``"memmap"``: where the stage's pseudo-inputs
    lived; ``"input"`` for the first stage, which reads the caller's arrays),
    ``cache_bytes``, ``pseudo_time`` (seconds spent computing them), ``train_time``
    (seconds in ``fit``) and ``epochs`` (run; fewer than asked when a callback stopped)."""
    model: Sequential
    histories: list
    stages: list


def default_head(num_outputs: int, hidden: int | None = None, pool_size: int = 1, generator=None):
    """A head factory: ``factory(shape)`` builds the output block for outputs of ``shape`` (per sample).

    Feature maps ``[C, H, W]`` are averaged down to ``pool_size x pool_size`` (global
    average pooling for 1; it must divide ``H`` and ``W``) and flattened; vectors
    ``[D]`` are used as they are, other shapes flattened.  Then an optional
    ``Linear(., hidden, activation='relu')`` and ``Linear(., num_outputs)``.  ``generator``
    (a seed or numpy Generator, drawn from by every head the factory builds) makes the
    heads' initialisation reproducible; ``None`` uses ``fusedlearn.nn.init``'s generator."""
    num_outputs, pool_size = int(num_outputs), int(pool_size)
    if num_outputs < 1:
        raise ValueError(f"default_head: num_outputs must be >= 1, got {num_outputs}")
    if hidden is not None and int(hidden) < 1:
        raise ValueError(f"default_head: hidden must be >= 1 or None, got {hidden}")
    if pool_size < 1:
        raise ValueError(f"default_head: pool_size must be >= 1, got {pool_size}")
    gen = np.random.default_rng(generator) if generator is not None and \
        not isinstance(generator, np.random.Generator) else generator

    def factory(shape) -> Sequential:
        shape = tuple(int(s) for s in shape)
        layers = []
        if len(shape) == 3:
            c, h, w = shape
            if h % pool_size or w % pool_size:
                raise ValueError(f"default_head: pool_size {pool_size} does not divide the feature map {h}x{w}")
            layers += [AdaptiveAvgPool2d(pool_size), Flatten()]
            features = c * pool_size * pool_size
        elif len(shape) == 1:
            features = shape[0]
        else:
            layers.append(Flatten())
            features = int(np.prod(shape))
        if hidden is not None:
            layers.append(Linear(features, int(hidden), activation="relu", generator=gen))
            features = int(hidden)
        layers.append(Linear(features, num_outputs, generator=gen))
        return Sequential(*layers)

    return factory


def _default_memory_bytes() -> int:
    try:
        total = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, OSError, ValueError):
        return _FALLBACK_MEMORY_BYTES
    return int(total * DEFAULT_MEMORY_FRACTION) if total > 0 else _FALLBACK_MEMORY_BYTES


def _stage_path(path, stage: int, stages: int):
    """``path`` for stage ``stage`` (1-based): ``{stage}`` formatted, else ``_stage<k>`` before the extension."""
    if path is None:
        return None
    path = os.fspath(path)
    if "{stage}" in path:
        return path.format(stage=stage)
    root, ext = os.path.splitext(path)
    return f"{root}_stage{stage}{ext}"


def _as_list(value):
    try:
        return list(value)
    except TypeError:
        return None


def _epochs_list(epochs_per_stage, n: int) -> list:
    def is_int(v) -> bool:
        return isinstance(v, (int, np.integer)) and not isinstance(v, bool)

    if is_int(epochs_per_stage):
        epochs = [int(epochs_per_stage)] * n
    else:
        items = None if isinstance(epochs_per_stage, (str, bytes)) else _as_list(epochs_per_stage)
        if items is None or not all(is_int(e) for e in items):
            raise TypeError("cascade: epochs_per_stage must be an int or a sequence of ints (one per block), "
                            f"got {epochs_per_stage!r}")
        epochs = [int(e) for e in items]
        if len(epochs) != n:
            raise ValueError(f"cascade: epochs_per_stage has {len(epochs)} entries for {n} blocks")
    if any(e < 1 for e in epochs):
        raise ValueError(f"cascade: every stage needs >= 1 epoch, got epochs_per_stage={epochs}")
    return epochs


def _probe_chain(blocks: list, x: np.ndarray, what: str) -> list:
    """Per-sample output shapes of the blocks on two samples of ``x``, in eval mode (no state changes)."""
    shapes = []
    h = x[:2]
    for i, b in enumerate(blocks):
        was = b.training
        b.eval()
        try:
            h = b(h)
        except (ValueError, TypeError) as exc:
            src = f"{what} inputs of shape {tuple(x.shape[1:])}" if i == 0 else \
                f"the output of block {i - 1}, shape {shapes[-1]}"
            raise ValueError(f"cascade: block {i} ({type(b).__name__}) does not accept {src}: {exc}") from exc
        finally:
            b.train(was)
        h = np.asarray(h)
        if h.ndim < 1 or h.shape[0] != min(2, len(x)):
            raise ValueError(f"cascade: block {i} ({type(b).__name__}) maps a batch of {min(2, len(x))} samples "
                             f"to an output of shape {h.shape}: a block must keep the batch dimension first")
        shapes.append(tuple(h.shape[1:]))
    return shapes


def _holds_array(value) -> bool:
    if isinstance(value, np.ndarray):
        return True
    if isinstance(value, (tuple, list)):
        return any(_holds_array(v) for v in value)
    if isinstance(value, dict):
        return any(_holds_array(v) for v in value.values())
    return False


def _release_activations(module: Module) -> None:
    """Drop what every layer of ``module`` kept from its last forward call for its backward
    (inputs, outputs, masks, pooling indices: private attributes holding arrays; parameters
    and buffers stay).  A frozen block or a discarded head never runs backward again, so
    only the stage being trained holds activations; the kept inputs can also be views of a
    memory-mapped pseudo-input file, which would keep its pages mapped after its removal."""
    for m in module.modules():
        keep = {"_parameters", "_buffers", "_modules", *m._parameters, *m._buffers, *m._modules}
        for name, value in list(vars(m).items()):
            if name.startswith("_") and name not in keep and _holds_array(value):
                object.__setattr__(m, name, None)


class _PseudoInputs:
    """The pseudo-input arrays of the current stage (train and validation), in memory or memory-mapped."""

    def __init__(self, budget: int, cache_dir) -> None:
        self.budget, self.cache_dir = budget, cache_dir
        self.tmpdir = None

    def allocate(self, stage: int, shape: tuple, n_train: int, n_val: int, dtype) -> tuple:
        dtype = np.dtype(dtype)
        per = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        nbytes = per * (n_train + n_val)
        if nbytes <= self.budget:
            return (np.empty((n_train, *shape), dtype), np.empty((n_val, *shape), dtype), "memory", nbytes)
        if self.tmpdir is None:
            self.tmpdir = tempfile.mkdtemp(prefix="fl_cascade_", dir=self.cache_dir)
        arrays = []
        for part, n in (("train", n_train), ("val", n_val)):
            path = os.path.join(self.tmpdir, f"stage{stage}_{part}.dat")
            if n == 0:
                arrays.append(np.empty((0, *shape), dtype))
                continue
            arrays.append(np.memmap(path, dtype=dtype, mode="w+", shape=(n, *shape)))
        return arrays[0], arrays[1], "memmap", nbytes

    def release(self, stage: int) -> None:
        """Remove stage ``stage``'s files (the arrays must no longer be referenced: Linux keeps a
        mapped file's pages alive until the mapping goes, so this is safe either way)."""
        if self.tmpdir is None:
            return
        for part in ("train", "val"):
            p = os.path.join(self.tmpdir, f"stage{stage}_{part}.dat")
            if os.path.exists(p):
                os.remove(p)

    def close(self) -> None:
        if self.tmpdir is not None:
            shutil.rmtree(self.tmpdir, ignore_errors=True)
            self.tmpdir = None


def _forward_into(block: Module, src: np.ndarray, dst: np.ndarray, batch_size: int, first=None) -> None:
    """``dst[:] = block(src)`` in eval mode, ``batch_size`` samples at a time (``first``: the first batch's output)."""
    for start in range(0, len(src), batch_size):
        out = first if (start == 0 and first is not None) else block(src[start:start + batch_size])
        dst[start:start + len(out)] = out
    if isinstance(dst, np.memmap):
        dst.flush()


def _pseudo_inputs(block: Module, x_train, x_val, cache: _PseudoInputs, stage: int, batch_size: int) -> tuple:
    """The frozen ``block``'s outputs over the training and validation inputs, computed once."""
    block.eval()
    first = np.asarray(block(x_train[:batch_size]))
    n_val = 0 if x_val is None else len(x_val)
    tr, va, where, nbytes = cache.allocate(stage, first.shape[1:], len(x_train), n_val, first.dtype)
    _forward_into(block, x_train, tr, batch_size, first)
    if x_val is not None and n_val:
        _forward_into(block, x_val, va, batch_size)
    return tr, (va if x_val is not None else None), where, nbytes


def _make_head(head, shape: tuple, stage: int) -> Module:
    try:
        h = head(shape)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"cascade: head factory failed for the output shape {shape} of block {stage}: {exc}") from exc
    if not isinstance(h, Module):
        raise TypeError(f"cascade: head factory must return a fusedlearn.nn.Module, got {type(h).__name__} "
                        f"(for block {stage})")
    if next(iter(h.parameters()), None) is None:
        raise ValueError(f"cascade: the head for block {stage} ({type(h).__name__}) has no parameters; "
                         "a stage trains its block together with a head, which needs trainable parameters")
    return h


def _check_head_output(h: Module, sample: np.ndarray, y, stage: int) -> None:
    """The fresh head on two pseudo-inputs: it must accept them and give one output row per sample
    (and, for class-index targets, at least ``max(y) + 1`` columns)."""
    was = h.training
    h.eval()
    try:
        out = np.asarray(h(sample))
    except (ValueError, TypeError) as exc:
        raise ValueError(f"cascade: the head for block {stage} does not accept its output of shape "
                         f"{tuple(sample.shape[1:])}: {exc}") from exc
    finally:
        h.train(was)
    if out.ndim < 1 or out.shape[0] != len(sample):
        raise ValueError(f"cascade: the head for block {stage} maps {len(sample)} samples to shape {out.shape}")
    y = np.asarray(y)
    if y.dtype.kind in "iu" and y.ndim == 1 and y.size:
        k = int(y.max()) + 1
        if out.ndim != 2 or out.shape[1] < k:
            raise ValueError(f"cascade: the head for block {stage} outputs shape {tuple(out.shape[1:])} per sample, "
                             f"but the targets are class indices up to {k - 1} (need [{k}] or more)")


def cascade(blocks, head, loss, optimizer, train, val=None, *, epochs_per_stage, batch_size: int = 64,
            scheduler=None, callbacks=(), seed=0, progress: bool = True, max_memory_bytes: int | None = None,
            cache_dir=None, pseudo_batch_size: int = 256, history_path=None, plot_path=None,
            shuffle: bool = True, drop_last: bool = False) -> CascadeResult:
    """Train ``blocks`` by deep cascade learning; returns a :class:`CascadeResult` ``(model, histories, stages)``.

    ``blocks``: a non-empty sequence of ``fusedlearn.nn`` modules (a ``Sequential`` gives
    its layers), each with parameters, each accepting the previous one's output.
    ``head``: a factory ``head(shape) -> Module`` given the per-sample output shape of the
    stage's block (e.g. :func:`default_head`); ``None`` means
    ``default_head(max(y) + 1, generator=seed)`` for class-index targets.  ``optimizer``: a
    factory ``optimizer(params) -> Optimizer`` called for each stage with the parameters of
    its block and head (so every stage starts at the initial learning rate, as in the
    authors' code); ``scheduler``: an optional
    factory ``scheduler(optimizer)``, one scheduler per stage.  ``loss``, ``batch_size``,
    ``shuffle``, ``drop_last`` and ``progress`` go to :func:`fit` unchanged;
    ``callbacks``: a sequence given to every stage, or a factory ``callbacks(stage)``
    (0-based) returning a fresh sequence per stage.  Stage ``i`` (0-based) shuffles with
    ``seed + i`` (``None`` stays ``None``).

    ``epochs_per_stage``: an int, or one int per block (the authors grow it: ``e + 10 i``).
    ``train`` / ``val``: ``ArrayDataset`` or ``(x, y)``; the validation inputs go through
    the frozen blocks as the training inputs do.  The pseudo-inputs of a stage (train and
    validation together) stay in memory up to ``max_memory_bytes`` (default: a quarter of
    the physical memory), else in ``numpy.memmap`` files in a temporary directory under
    ``cache_dir`` (default: the system's), removed at the end or on failure.
    ``pseudo_batch_size``: samples per forward call of a frozen block (256, as fit's
    evaluation: the activations of that many samples are the pass's working memory).

    ``history_path`` / ``plot_path``: written per stage by :func:`fit`, with ``{stage}``
    (1-based) formatted into the path, or ``_stage<k>`` put before the extension.

    The returned model is ``Sequential(*blocks, last_head)`` in eval mode; the blocks are
    the caller's objects, trained in place (their parameters keep ``requires_grad``, so
    the model can be fine-tuned end-to-end with :func:`fit`)."""
    if isinstance(blocks, Module) and not isinstance(blocks, Sequential):
        raise TypeError("cascade: blocks must be a sequence of modules (or a Sequential), got a single "
                        f"{type(blocks).__name__}; wrap it in a list")
    try:
        blocks = list(blocks)
    except TypeError:
        raise TypeError(f"cascade: blocks must be a sequence of modules, got {type(blocks).__name__}") from None
    if not blocks:
        raise ValueError("cascade: blocks is empty; give at least one block")
    for i, b in enumerate(blocks):
        if not isinstance(b, Module):
            raise TypeError(f"cascade: block {i} is not a fusedlearn.nn.Module ({type(b).__name__})")
        if next(iter(b.parameters()), None) is None:
            raise ValueError(f"cascade: block {i} ({type(b).__name__}) has no parameters; put a parameter-free "
                             "layer (activation, pooling, flatten) into the block before or after it")
    if len({id(b) for b in blocks}) != len(blocks):
        raise ValueError("cascade: the same module appears twice in blocks")
    owners = {}
    for i, b in enumerate(blocks):
        for p in b.parameters():
            if owners.setdefault(id(p), i) != i:
                raise ValueError(f"cascade: blocks {owners[id(p)]} and {i} share a parameter; a frozen block "
                                 "would change when a later stage trains")
    train = labelled_dataset(train, "cascade", "train")
    val = None if val is None else labelled_dataset(val, "cascade", "val", allow_empty=True)
    if val is not None and tuple(val.x.shape[1:]) != tuple(train.x.shape[1:]):
        raise ValueError(f"cascade: val inputs have per-sample shape {tuple(val.x.shape[1:])}, "
                         f"train inputs {tuple(train.x.shape[1:])}")
    if head is None:
        y = np.asarray(train.y)
        if y.dtype.kind not in "iu" or y.ndim != 1:
            raise ValueError("cascade: head=None (default_head) needs class-index targets to count the outputs; "
                             "give a head factory")
        head = default_head(int(y.max()) + 1, generator=seed)
    if not callable(head):
        raise TypeError(f"cascade: head must be a factory head(shape) -> Module, got {type(head).__name__}")
    if not callable(optimizer):
        raise TypeError("cascade: optimizer must be a factory optimizer(params) -> Optimizer, "
                        f"got {type(optimizer).__name__}")
    if scheduler is not None and not callable(scheduler):
        raise TypeError(f"cascade: scheduler must be a factory scheduler(optimizer) or None, "
                        f"got {type(scheduler).__name__}")
    if callbacks and not callable(callbacks):
        callbacks = list(callbacks)
    epochs = _epochs_list(epochs_per_stage, len(blocks))
    pseudo_batch_size = int(pseudo_batch_size)
    if pseudo_batch_size < 1:
        raise ValueError(f"cascade: pseudo_batch_size must be >= 1, got {pseudo_batch_size}")
    budget = _default_memory_bytes() if max_memory_bytes is None else int(max_memory_bytes)
    if budget < 0:
        raise ValueError(f"cascade: max_memory_bytes must be >= 0, got {max_memory_bytes}")
    if cache_dir is not None and not os.path.isdir(cache_dir):
        raise FileNotFoundError(f"cascade: cache_dir {os.fspath(cache_dir)!r} is not a directory")

    in_shapes = [tuple(train.x.shape[1:])] + _probe_chain(blocks, np.asarray(train.x), "train")
    if val is not None:
        _probe_chain(blocks, np.asarray(val.x), "val")
    for b in blocks:
        _release_activations(b)
    n = len(blocks)
    cache = _PseudoInputs(budget, cache_dir)
    histories, stages = [], []
    x_tr, x_va = train.x, None if val is None else val.x
    where, nbytes, pseudo_time = "input", 0, 0.0
    head_module = None
    try:
        for i, block in enumerate(blocks):
            if i > 0:  # the block trained last is frozen: its outputs are this stage's inputs, computed once
                t0 = time.perf_counter()
                prev = blocks[i - 1]
                new_tr, new_va, where, nbytes = _pseudo_inputs(prev, x_tr, x_va, cache, i, pseudo_batch_size)
                x_tr, x_va = new_tr, new_va  # drops the last stage's arrays
                _release_activations(prev)
                cache.release(i - 1)
                pseudo_time = time.perf_counter() - t0
            head_module = _make_head(head, in_shapes[i + 1], i)
            block.eval()
            _check_head_output(head_module, np.asarray(block(x_tr[:2])), train.y, i)
            _release_activations(block)
            _release_activations(head_module)
            stage_model = Sequential(block, head_module)
            params = list(stage_model.parameters())
            opt = optimizer(params)
            if not (hasattr(opt, "step") and hasattr(opt, "zero_grad") and hasattr(opt, "param_groups")):
                raise TypeError(f"cascade: optimizer factory returned {type(opt).__name__}, which is not an "
                                "optimizer (needs step, zero_grad and param_groups)")
            sched = None if scheduler is None else scheduler(opt)
            cbs = callbacks(i) if callable(callbacks) else callbacks
            if progress:
                print(f"cascade stage {i + 1}/{n}: {type(block).__name__} {in_shapes[i]} -> {in_shapes[i + 1]}, "
                      f"{epochs[i]} epochs, pseudo-inputs {where}", flush=True)
            t0 = time.perf_counter()
            hist = fit(stage_model, loss, opt, ArrayDataset(x_tr, train.y),
                       None if val is None else ArrayDataset(x_va, val.y), epochs=epochs[i],
                       batch_size=batch_size, scheduler=sched, callbacks=cbs or (),
                       seed=None if seed is None else seed + i, progress=progress,
                       history_path=_stage_path(history_path, i + 1, n), plot_path=_stage_path(plot_path, i + 1, n),
                       shuffle=shuffle, drop_last=drop_last)
            train_time = time.perf_counter() - t0
            block.eval()  # frozen: BatchNorm uses its running statistics from now on
            stage_model.zero_grad(set_to_none=True)  # only the stage being trained holds gradients ...
            _release_activations(stage_model)  # ... and activations
            del opt, sched, stage_model, params
            histories.append(hist)
            stages.append({"stage": i + 1, "input_shape": in_shapes[i], "output_shape": in_shapes[i + 1],
                           "cache": where, "cache_bytes": int(nbytes), "pseudo_time": pseudo_time,
                           "train_time": train_time, "epochs": len(hist["epoch"])})
    finally:
        x_tr = x_va = None
        cache.close()
    model = Sequential(*blocks, head_module)
    model.eval()
    return CascadeResult(model, histories, stages)


__all__ = ["cascade", "default_head", "CascadeResult"]
