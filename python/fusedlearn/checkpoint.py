"""Checkpoints: ``fl.save`` / ``fl.load``, written atomically.

A checkpoint is a pickle of plain Python containers and numpy arrays (no torch
needed): the model's state dict, the optimizer's state dict, the random states
of layers that draw random numbers (``Dropout``), the epoch and any extra
entries.  It is written to a temporary file in the target's directory, flushed
and fsync'ed, then renamed over the target with ``os.replace``, so a crash at
any moment leaves either the old file or the new one, never a partial one.

``load`` unpickles with an allow-list (numpy arrays, dtypes and scalars, and
builtin containers) unless ``trusted=True``, so a checkpoint cannot run code.
"""
from __future__ import annotations

import copy
import io
import os
import pickle
import tempfile
from collections import OrderedDict

import numpy as np

FORMAT = "fusedlearn-checkpoint"
VERSION = 1
_RESERVED = {"format", "version", "model", "optimizer", "epoch", "rng"}


def _snapshot(obj):
    """A deep copy with every array as a numpy array (torch tensors converted)."""
    if isinstance(obj, np.ndarray):
        return obj.copy()
    if hasattr(obj, "detach") and hasattr(obj, "cpu") and hasattr(obj, "numpy"):
        return obj.detach().cpu().numpy().copy()
    if isinstance(obj, dict):
        return type(obj)((k, _snapshot(v)) for k, v in obj.items()) if isinstance(obj, OrderedDict) \
            else {k: _snapshot(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_snapshot(v) for v in obj]
    if isinstance(obj, tuple):
        return tuple(_snapshot(v) for v in obj)
    return copy.deepcopy(obj)


def rng_states(model) -> dict:
    """``{module name: rng state}`` of the modules that draw random numbers."""
    out = {}
    for name, m in model.named_modules():
        get = getattr(m, "get_rng_state", None)
        if callable(get):
            out[name] = copy.deepcopy(get())
    return out


def set_rng_states(model, states: dict) -> None:
    mods = dict(model.named_modules())
    for name, state in states.items():
        m = mods.get(name)
        if m is not None and callable(getattr(m, "set_rng_state", None)):
            m.set_rng_state(copy.deepcopy(state))


def _file_mode(path: str) -> int:
    try:
        return os.stat(path).st_mode & 0o7777
    except OSError:
        mask = os.umask(0)
        os.umask(mask)
        return 0o666 & ~mask


def atomic_write_bytes(path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (temp file in the same directory, fsync, os.replace)."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp", dir=directory)
    try:
        try:  # mkstemp makes the file 0600: give it the target's mode, or the umask's default
            os.fchmod(fd, _file_mode(path))
        except (OSError, AttributeError):  # pragma: no cover - e.g. Windows
            pass
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    try:  # make the rename itself durable
        dfd = os.open(directory, os.O_RDONLY)
    except OSError:  # pragma: no cover - e.g. platforms without directory fds
        return
    try:
        os.fsync(dfd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(dfd)


def save(path, model=None, optimizer=None, epoch=None, **extra) -> None:
    """Write a checkpoint of ``model`` (its state dict and RNG states), ``optimizer``
    (its state dict), ``epoch`` and any ``extra`` picklable entries to ``path``, atomically."""
    bad = _RESERVED.intersection(extra)
    if bad:
        raise ValueError(f"save: extra entries may not be named {sorted(bad)} (reserved)")
    ckpt = {"format": FORMAT, "version": VERSION, "epoch": epoch}
    if model is not None:
        ckpt["model"] = _snapshot(model.state_dict())
        ckpt["rng"] = rng_states(model)
    if optimizer is not None:
        ckpt["optimizer"] = _snapshot(optimizer.state_dict())
    for k, v in extra.items():
        ckpt[k] = _snapshot(v)
    buf = io.BytesIO()
    pickle.dump(ckpt, buf, protocol=pickle.HIGHEST_PROTOCOL)
    atomic_write_bytes(path, buf.getvalue())


_SAFE = {
    "builtins": {"dict", "list", "tuple", "set", "frozenset", "complex", "slice", "range", "bytearray", "float",
                 "int", "bool", "str", "bytes"},
    "collections": {"OrderedDict", "defaultdict"},
    "numpy": {"ndarray", "dtype", "float32", "float64", "int64", "int32", "uint8", "bool_"},
    "numpy.core.multiarray": {"_reconstruct", "scalar"},
    "numpy._core.multiarray": {"_reconstruct", "scalar"},
    "numpy.core.numeric": {"_frombuffer"},
    "numpy._core.numeric": {"_frombuffer"},
}


class _SafeUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if name in _SAFE.get(module, ()) or (module == "numpy.dtypes" and name.endswith("DType")):
            return super().find_class(module, name)
        raise pickle.UnpicklingError(
            f"checkpoint refers to {module}.{name}, which a checkpoint should not contain; "
            "use fl.load(..., trusted=True) for files you trust")


def load(path, model=None, optimizer=None, *, strict: bool = True, trusted: bool = False) -> dict:
    """Read a checkpoint; load it into ``model`` and ``optimizer`` when given.

    Returns the checkpoint dict: ``'model'`` (state dict), ``'optimizer'``,
    ``'epoch'``, ``'rng'`` and the extra entries given to :func:`save`.
    """
    with open(path, "rb") as f:
        ckpt = (pickle.load(f) if trusted else _SafeUnpickler(f).load())
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise ValueError(f"{os.fspath(path)}: not a fusedlearn checkpoint")
    if model is not None:
        if "model" not in ckpt:
            raise ValueError(f"{os.fspath(path)}: the checkpoint holds no model state")
        model.load_state_dict(ckpt["model"], strict=strict)
        set_rng_states(model, ckpt.get("rng", {}))
    if optimizer is not None:
        if "optimizer" not in ckpt:
            raise ValueError(f"{os.fspath(path)}: the checkpoint holds no optimizer state")
        optimizer.load_state_dict(ckpt["optimizer"])
    return ckpt
