"""Callbacks of :func:`fusedlearn.train.fit`.

A callback may define ``on_train_begin(state)``, ``on_epoch_begin(epoch, state)``,
``on_batch_end(batch, logs, state)``, ``on_epoch_end(epoch, logs, state)`` and
``on_train_end(history, state)``; ``state`` is the dict fit keeps (model,
optimizer, history, ...).  Setting ``state['stop'] = True`` ends training after
the current epoch.  ``state_dict()`` / ``load_state_dict()`` make it resumable
from a checkpoint.
"""
from __future__ import annotations

import math

import numpy as np


class Callback:
    def on_train_begin(self, state: dict) -> None:
        pass

    def on_epoch_begin(self, epoch: int, state: dict) -> None:
        pass

    def on_batch_end(self, batch: int, logs: dict, state: dict) -> None:
        pass

    def on_epoch_end(self, epoch: int, logs: dict, state: dict) -> None:
        pass

    def on_train_end(self, history: dict, state: dict) -> None:
        pass

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


class EarlyStopping(Callback):
    """Stop when ``monitor`` (default ``'val_loss'``; ``'loss'`` when there is no
    validation set) has not improved by more than ``min_delta`` for ``patience``
    epochs.  ``mode``: ``'min'``, ``'max'`` or ``'auto'`` (max for accuracies).
    ``restore_best_weights`` copies the best epoch's parameters back at the end.
    """

    def __init__(self, monitor: str = "val_loss", patience: int = 5, min_delta: float = 0.0, mode: str = "auto",
                 restore_best_weights: bool = False, verbose: bool = False) -> None:
        if mode not in ("auto", "min", "max"):
            raise ValueError(f"EarlyStopping: mode must be 'auto', 'min' or 'max', got {mode!r}")
        if int(patience) < 0:
            raise ValueError(f"EarlyStopping: patience must be >= 0, got {patience}")
        self.monitor = monitor
        self.patience = int(patience)
        self.min_delta = abs(float(min_delta))
        self.mode = mode
        self.restore_best_weights = bool(restore_best_weights)
        self.verbose = verbose
        self.best = None
        self.best_epoch = None
        self.wait = 0
        self.stopped_epoch = None
        self._best_weights = None

    def _maximize(self) -> bool:
        if self.mode != "auto":
            return self.mode == "max"
        return "acc" in self.monitor

    def on_epoch_end(self, epoch, logs, state):
        key = self.monitor
        if key not in logs or logs[key] is None:
            if key == "val_loss" and "loss" in logs:
                key = "loss"
            else:
                raise KeyError(f"EarlyStopping: monitored quantity {self.monitor!r} is not logged "
                               f"(available: {sorted(logs)})")
        value = float(logs[key])
        if math.isnan(value):
            improved = False
        elif self.best is None:
            improved = True
        elif self._maximize():
            improved = value > self.best + self.min_delta
        else:
            improved = value < self.best - self.min_delta
        if improved:
            self.best, self.best_epoch, self.wait = value, epoch, 0
            if self.restore_best_weights:
                self._best_weights = {k: v.copy() for k, v in state["model"].state_dict().items()}
        else:
            self.wait += 1
            if self.wait >= self.patience:
                self.stopped_epoch = epoch
                state["stop"] = True
                if self.verbose:
                    print(f"early stopping at epoch {epoch}: {key} has not improved for {self.wait} epochs "
                          f"(best {self.best:.5g} at epoch {self.best_epoch})")

    def on_train_end(self, history, state):
        if self.restore_best_weights and self._best_weights is not None:
            state["model"].load_state_dict(self._best_weights)

    def state_dict(self) -> dict:
        return {"best": self.best, "best_epoch": self.best_epoch, "wait": self.wait,
                "stopped_epoch": self.stopped_epoch, "best_weights": self._best_weights}

    def load_state_dict(self, state: dict) -> None:
        self.best = state["best"]
        self.best_epoch = state["best_epoch"]
        self.wait = state["wait"]
        self.stopped_epoch = state["stopped_epoch"]
        bw = state.get("best_weights")
        self._best_weights = None if bw is None else {k: np.array(v) for k, v in bw.items()}


class LambdaCallback(Callback):
    """A callback from functions: ``LambdaCallback(on_epoch_end=lambda epoch, logs, state: ...)``."""

    def __init__(self, **hooks) -> None:
        allowed = {"on_train_begin", "on_epoch_begin", "on_batch_end", "on_epoch_end", "on_train_end"}
        unknown = set(hooks) - allowed
        if unknown:
            raise TypeError(f"LambdaCallback: unknown hooks {sorted(unknown)}")
        for name, fn in hooks.items():
            setattr(self, name, fn)
