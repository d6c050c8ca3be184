"""The training loop: :func:`fit`, :func:`evaluate`, :func:`predict`."""
from __future__ import annotations

import os
import sys
import time

import numpy as np

from .. import checkpoint as ckpt_io
from ..data.dataset import ArrayDataset, as_dataset, labelled_dataset
from .callbacks import Callback
from .history import plot_history, write_history

HISTORY_KEYS = ("epoch", "loss", "accuracy", "val_loss", "val_accuracy", "lr", "time")


def _accuracy_count(out: np.ndarray, y) -> int | None:
    """Correct predictions of a classifier's output, or None when it is not a classification."""
    if y is None or out.ndim != 2 or out.shape[1] < 2:
        return None
    y = np.asarray(y)
    if y.dtype.kind not in "iu" or y.shape != (out.shape[0],):
        return None
    return int((out.argmax(axis=1) == y).sum())


def _batch_loss_sum(value, n: int, loss) -> float:
    """The sum over the batch of the per-sample losses, from the loss's reduced value."""
    red = getattr(loss, "reduction", "mean")
    v = np.asarray(value)
    if red == "none":
        return float(v.sum())
    return float(v) if red == "sum" else float(v) * n


class _Tally:
    """Running mean loss (and accuracy, while every batch is a classification) over batches."""

    def __init__(self, loss) -> None:
        self.loss, self.total, self.correct, self.n, self.acc_ok = loss, 0.0, 0, 0, True

    def add(self, value, out, y) -> None:
        self.total += _batch_loss_sum(value, len(out), self.loss)
        c = _accuracy_count(out, y)
        if c is None:
            self.acc_ok = False
        else:
            self.correct += c
        self.n += len(out)

    def summary(self) -> dict:
        n = max(self.n, 1)
        return {"loss": self.total / n, "accuracy": self.correct / n if self.acc_ok else None}


def predict(model, x, batch_size: int = 1024) -> np.ndarray:
    """``model``'s outputs for ``x`` in eval mode, computed in batches."""
    was = model.training
    model.eval()
    try:
        outs = [model(xb) for xb in ArrayDataset(x).batches(batch_size)]
    finally:
        model.train(was)
    return np.concatenate(outs) if outs else np.empty((0,))


def evaluate(model, loss, data, batch_size: int = 1024) -> dict:
    """Mean loss (and accuracy for classifiers) of ``model`` over ``data``, in eval mode."""
    ds = as_dataset(data, "data")
    was = model.training
    model.eval()
    tally = _Tally(loss)
    try:
        for xb, yb in ds.batches(batch_size):
            out = model(xb)
            tally.add(loss(out, yb)[0], out, yb)
    finally:
        model.train(was)
    return tally.summary()


class _Progress:
    """A tqdm bar per epoch when tqdm is installed, else one printed line per epoch."""

    def __init__(self, enabled: bool, total: int, epoch: int, epochs: int) -> None:
        self.bar = None
        self.enabled = enabled
        self.desc = f"epoch {epoch}/{epochs}"
        if not enabled:
            return
        try:
            from tqdm.auto import tqdm
        except ImportError:
            tqdm = None
        if tqdm is not None:
            self.bar = tqdm(total=total, desc=self.desc, unit="batch", leave=True, dynamic_ncols=True,
                            file=sys.stderr)

    def update(self, postfix: dict) -> None:
        if self.bar is not None:
            self.bar.set_postfix(postfix, refresh=False)
            self.bar.update(1)

    def close(self, postfix: dict) -> None:
        if self.bar is not None:
            self.bar.set_postfix(postfix, refresh=True)
            self.bar.close()
        elif self.enabled:
            print(f"{self.desc}  " + "  ".join(f"{k} {v}" for k, v in postfix.items()), flush=True)


def _fmt(logs: dict) -> dict:
    out = {}
    for k in ("loss", "accuracy", "val_loss", "val_accuracy"):
        v = logs.get(k)
        if v is not None:
            out[k.replace("accuracy", "acc")] = f"{v:.4f}"
    return out


def _call(cbs, hook: str, *args) -> None:
    for cb in cbs:
        fn = getattr(cb, hook, None)
        if fn is not None:
            fn(*args)


def fit(model, loss, optimizer, train_data, val_data=None, *, epochs: int, batch_size: int, scheduler=None,
        callbacks=(), seed=0, progress: bool = True, history_path=None, plot_path=None, checkpoint_path=None,
        resume: bool = False, shuffle: bool = True, drop_last: bool = False, objective=None) -> dict:
    """Train ``model`` for ``epochs`` epochs of mini-batches; returns the history.

    ``loss(pred, y)`` returns ``(loss, grad)``; each batch runs ``model(x)``,
    the loss, ``optimizer.zero_grad()``, ``model.backward_params(grad)`` (``backward``
    without the input gradient, which no one reads; ``model.backward`` if it has none) and
    ``optimizer.step()``.  The batch order is a permutation per epoch drawn from
    a generator seeded with ``seed``.  After each epoch the model is evaluated
    on ``val_data`` (an ``ArrayDataset`` or ``(x, y)``), the callbacks run
    (e.g. :class:`EarlyStopping`), the scheduler steps (``ReduceLROnPlateau``
    gets the validation loss, or the training loss without validation data) and,
    with ``checkpoint_path``, a checkpoint is written atomically.

    ``resume=True`` continues from ``checkpoint_path`` when it exists: the model,
    optimizer, scheduler, callbacks, history and the shuffling generator are
    restored, so the result is bit-identical to an uninterrupted run.

    The history is a dict of lists keyed ``epoch, loss, accuracy, val_loss,
    val_accuracy, lr, time`` (accuracies are None for non-classifiers, val_*
    None without validation data).  ``history_path`` (``.csv`` / ``.json``) and
    ``plot_path`` (PNG) are written at the end.

    ``objective`` replaces the forward / loss / backward of a batch (e.g.
    :class:`AdversarialFeatures`, :func:`augmented`): after ``optimizer.zero_grad()``
    it is called as ``out, value = objective(model, loss, xb, yb)``, must leave the
    gradients in the parameters, and returns the output used for the accuracy and
    the loss value logged; then ``optimizer.step()`` runs as usual.
    """
    epochs, batch_size = int(epochs), int(batch_size)
    if epochs < 0:
        raise ValueError(f"fit: epochs must be >= 0, got {epochs}")
    if batch_size < 1:
        raise ValueError(f"fit: batch_size must be >= 1, got {batch_size}")
    train = labelled_dataset(train_data, "fit", "train_data")
    val = None if val_data is None else as_dataset(val_data, "val_data")
    callbacks = list(callbacks) if callbacks else []
    for cb in callbacks:
        if not isinstance(cb, Callback) and not any(hasattr(cb, h) for h in ("on_epoch_end", "on_batch_end")):
            raise TypeError(f"fit: {cb!r} is not a callback")
    if resume and checkpoint_path is None:
        raise ValueError("fit: resume=True needs checkpoint_path")
    if objective is not None and not callable(objective):
        raise TypeError(f"fit: objective must be callable as objective(model, loss, xb, yb), got {objective!r}")
    plateau = scheduler is not None and type(scheduler).__name__ == "ReduceLROnPlateau"

    rng = np.random.default_rng(seed)
    history = {k: [] for k in HISTORY_KEYS}
    start = 0
    stopped = False
    if resume and os.path.exists(checkpoint_path):
        ck = ckpt_io.load(checkpoint_path, model, optimizer)
        fs = ck["fit_state"]
        rng.bit_generator.state = fs["shuffle_rng"]
        history = {k: list(v) for k, v in fs["history"].items()}
        start = int(ck["epoch"])
        stopped = bool(fs.get("stopped", False))
        if scheduler is not None and fs.get("scheduler") is not None:
            scheduler.load_state_dict(fs["scheduler"])
        saved_cbs = fs.get("callbacks", [])
        for cb, s in zip(callbacks, saved_cbs):
            if s is not None and hasattr(cb, "load_state_dict"):
                cb.load_state_dict(s)

    state = {"model": model, "optimizer": optimizer, "scheduler": scheduler, "history": history, "stop": stopped,
             "epoch": start, "epochs": epochs}
    _call(callbacks, "on_train_begin", state)
    nb = train.num_batches(batch_size, drop_last)
    epoch = start
    while epoch < epochs and not state["stop"]:
        epoch += 1
        state["epoch"] = epoch
        _call(callbacks, "on_epoch_begin", epoch, state)
        model.train()
        t0 = time.perf_counter()
        bar = _Progress(progress, nb, epoch, epochs)
        tally = _Tally(loss)
        try:
            for b, (xb, yb) in enumerate(train.batches(batch_size, shuffle=shuffle, seed=rng,
                                                       drop_last=drop_last)):
                if objective is None:
                    out = model(xb)
                    value, grad = loss(out, yb)
                    optimizer.zero_grad()
                    # the data's gradient is not needed (backward_params: Module's, or plain backward)
                    getattr(model, "backward_params", model.backward)(grad)
                else:
                    optimizer.zero_grad()
                    out, value = objective(model, loss, xb, yb)
                optimizer.step()
                tally.add(value, out, yb)
                running = tally.summary()
                if callbacks:
                    _call(callbacks, "on_batch_end", b, {"loss": float(np.sum(value)), **running}, state)
                if bar.bar is not None and (b % 4 == 0 or b == nb - 1):
                    bar.update(_fmt(running))
                elif bar.bar is not None:
                    bar.bar.update(1)
            logs = {"epoch": epoch, **tally.summary(), "val_loss": None, "val_accuracy": None}
            if val is not None:
                v = evaluate(model, loss, val, batch_size=max(batch_size, 256))
                logs["val_loss"], logs["val_accuracy"] = v["loss"], v["accuracy"]
            logs["lr"] = float(optimizer.param_groups[0]["lr"])
            logs["time"] = time.perf_counter() - t0
        except BaseException:
            if bar.bar is not None:
                bar.bar.close()
            raise
        bar.close(_fmt(logs))
        for k in HISTORY_KEYS:
            history[k].append(logs[k])
        _call(callbacks, "on_epoch_end", epoch, logs, state)
        if scheduler is not None:
            if plateau:
                scheduler.step(logs["val_loss"] if logs["val_loss"] is not None else logs["loss"])
            else:
                scheduler.step()
        if checkpoint_path is not None:
            fit_state = {
                "shuffle_rng": rng.bit_generator.state,
                "history": history,
                "scheduler": None if scheduler is None else scheduler.state_dict(),
                "callbacks": [cb.state_dict() if hasattr(cb, "state_dict") else None for cb in callbacks],
                "stopped": bool(state["stop"]),
            }
            ckpt_io.save(checkpoint_path, model, optimizer, epoch=epoch, fit_state=fit_state)
    _call(callbacks, "on_train_end", history, state)
    if history_path is not None:
        write_history(history, history_path)
    if plot_path is not None:
        plot_history(history, plot_path)
    return history
