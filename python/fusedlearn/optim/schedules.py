"""Learning-rate schedules with ``torch.optim.lr_scheduler``'s API.

A schedule writes ``group['lr']`` of its optimizer's param groups at each
``step()``.  The constructor records ``group['initial_lr']`` (the ``base_lrs``)
and applies the epoch-0 rate; ``get_last_lr()`` is what the last step set;
``state_dict()`` / ``load_state_dict()`` hold everything but the optimizer.
They work with fusedlearn optimizers and with ``torch.optim`` ones alike.
"""
from __future__ import annotations

import math


class LRScheduler:
    """Base class: subclasses give ``get_lr()``, the rates for ``self.last_epoch``,
    and may give ``_closed_form_lr()`` for ``step(epoch)``."""

    def __init__(self, optimizer, last_epoch: int = -1):
        self.optimizer = optimizer
        if last_epoch == -1:
            for group in optimizer.param_groups:
                group.setdefault("initial_lr", group["lr"])
        else:
            for i, group in enumerate(optimizer.param_groups):
                if "initial_lr" not in group:
                    raise KeyError(f"param 'initial_lr' is not specified in param_groups[{i}] when resuming "
                                   "an optimizer")
        self.base_lrs = [group["initial_lr"] for group in optimizer.param_groups]
        self.last_epoch = last_epoch
        self._step_count = 0
        self.step()

    def get_lr(self) -> list:
        raise NotImplementedError

    def get_last_lr(self) -> list:
        return self._last_lr

    def step(self, epoch=None) -> None:
        self._step_count += 1
        if epoch is None:
            self.last_epoch += 1
            lrs = self.get_lr()
        else:
            self.last_epoch = int(epoch)
            closed = getattr(self, "_closed_form_lr", None)
            lrs = closed() if closed is not None else self.get_lr()
        for group, lr in zip(self.optimizer.param_groups, lrs):
            group["lr"] = lr
        self._last_lr = [group["lr"] for group in self.optimizer.param_groups]

    def state_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "optimizer"}

    def load_state_dict(self, state_dict: dict) -> None:
        self.__dict__.update(state_dict)


def _lrs(optimizer) -> list:
    return [group["lr"] for group in optimizer.param_groups]


class StepLR(LRScheduler):
    """Multiply the rate by ``gamma`` every ``step_size`` epochs:
    ``lr_t = base_lr * gamma ** (t // step_size)`` (applied multiplicatively to
    the current rate, as torch does, so it composes with other changes)."""

    def __init__(self, optimizer, step_size: int, gamma: float = 0.1, last_epoch: int = -1):
        if int(step_size) < 1:
            raise ValueError(f"step_size must be a positive integer, got {step_size}")
        self.step_size = int(step_size)
        self.gamma = gamma
        super().__init__(optimizer, last_epoch)

    def get_lr(self):
        if self.last_epoch == 0 or self.last_epoch % self.step_size != 0:
            return _lrs(self.optimizer)
        return [lr * self.gamma for lr in _lrs(self.optimizer)]

    def _closed_form_lr(self):
        return [base * self.gamma ** (self.last_epoch // self.step_size) for base in self.base_lrs]


class ExponentialLR(LRScheduler):
    """Multiply the rate by ``gamma`` every epoch: ``lr_t = base_lr * gamma ** t``."""

    def __init__(self, optimizer, gamma: float, last_epoch: int = -1):
        self.gamma = gamma
        super().__init__(optimizer, last_epoch)

    def get_lr(self):
        if self.last_epoch == 0:
            return _lrs(self.optimizer)
        return [lr * self.gamma for lr in _lrs(self.optimizer)]

    def _closed_form_lr(self):
        return [base * self.gamma ** self.last_epoch for base in self.base_lrs]


class CosineAnnealingLR(LRScheduler):
    """Cosine annealing (Loshchilov & Hutter 2017, without restarts), closed form:
    ``lr_t = eta_min + (base_lr - eta_min) * (1 + cos(pi * t / T_max)) / 2``.

    Past ``T_max`` the rate rises again along the same cosine, as torch's does.
    """

    def __init__(self, optimizer, T_max: int, eta_min: float = 0.0, last_epoch: int = -1):
        if int(T_max) < 1:
            raise ValueError(f"T_max must be a positive integer, got {T_max}")
        self.T_max = int(T_max)
        self.eta_min = eta_min
        super().__init__(optimizer, last_epoch)

    def get_lr(self):
        return self._closed_form_lr()

    def _closed_form_lr(self):
        c = (1.0 + math.cos(math.pi * self.last_epoch / self.T_max)) / 2.0
        return [self.eta_min + (base - self.eta_min) * c for base in self.base_lrs]


class InverseTimeLR(LRScheduler):
    """The ``a / (b + t)`` annealing: ``lr_t = a / (b + t)``.

    ``a`` defaults to ``base_lr * b`` for each group, so ``lr_0 = base_lr``
    and the rate halves by ``t = b``.  ``a`` may be one number or one per group.
    """

    def __init__(self, optimizer, b: float, a=None, last_epoch: int = -1):
        if not float(b) > 0.0:
            raise ValueError(f"b must be > 0, got {b}")
        self.b = float(b)
        if a is not None and not isinstance(a, (list, tuple)):
            a = [float(a)] * len(optimizer.param_groups)
        if a is not None and len(a) != len(optimizer.param_groups):
            raise ValueError(f"expected {len(optimizer.param_groups)} values of a, got {len(a)}")
        self.a = None if a is None else [float(x) for x in a]
        super().__init__(optimizer, last_epoch)

    def get_lr(self):
        return self._closed_form_lr()

    def _closed_form_lr(self):
        a = self.a if self.a is not None else [base * self.b for base in self.base_lrs]
        return [ai / (self.b + self.last_epoch) for ai in a]


class ReduceLROnPlateau(LRScheduler):
    """Divide the rate by ``1 / factor`` (default: by 10) when a metric stops improving.

    ``step(metric)`` once per epoch.  A metric improves on the best so far when,
    for ``mode='min'``, it is below ``best * (1 - threshold)`` (``threshold_mode
    ='rel'``) or below ``best - threshold`` (``'abs'``); ``'max'`` mirrors it.
    After more than ``patience`` epochs without improvement each group's rate
    becomes ``max(lr * factor, min_lr)`` (changes smaller than ``eps`` are
    skipped), then ``cooldown`` epochs pass in which bad epochs are not counted.
    """

    def __init__(self, optimizer, mode: str = "min", factor: float = 0.1, patience: int = 10,
                 threshold: float = 1e-4, threshold_mode: str = "rel", cooldown: int = 0, min_lr=0,
                 eps: float = 1e-8):
        if factor >= 1.0:
            raise ValueError("Factor should be < 1.0.")
        if mode not in ("min", "max"):
            raise ValueError(f"mode {mode} is unknown!")
        if threshold_mode not in ("rel", "abs"):
            raise ValueError(f"threshold mode {threshold_mode} is unknown!")
        self.optimizer = optimizer
        n = len(optimizer.param_groups)
        if isinstance(min_lr, (list, tuple)):
            if len(min_lr) != n:
                raise ValueError(f"expected {n} min_lrs, got {len(min_lr)}")
            self.min_lrs = [float(x) for x in min_lr]
        else:
            self.min_lrs = [float(min_lr)] * n
        self.factor = factor
        self.patience = patience
        self.threshold = threshold
        self.threshold_mode = threshold_mode
        self.mode = mode
        self.cooldown = cooldown
        self.eps = eps
        self.last_epoch = 0
        self._last_lr = _lrs(optimizer)
        self._reset()

    def _reset(self) -> None:
        self.best = math.inf if self.mode == "min" else -math.inf
        self.num_bad_epochs = 0
        self.cooldown_counter = 0

    @property
    def in_cooldown(self) -> bool:
        return self.cooldown_counter > 0

    def is_better(self, a: float, best: float) -> bool:
        if self.mode == "min":
            bound = best * (1.0 - self.threshold) if self.threshold_mode == "rel" else best - self.threshold
            return a < bound
        bound = best * (1.0 + self.threshold) if self.threshold_mode == "rel" else best + self.threshold
        return a > bound

    def step(self, metrics, epoch=None) -> None:
        current = float(metrics)
        self.last_epoch = self.last_epoch + 1 if epoch is None else int(epoch)
        if self.is_better(current, self.best):
            self.best = current
            self.num_bad_epochs = 0
        else:
            self.num_bad_epochs += 1
        if self.in_cooldown:
            self.cooldown_counter -= 1
            self.num_bad_epochs = 0
        if self.num_bad_epochs > self.patience:
            for group, min_lr in zip(self.optimizer.param_groups, self.min_lrs):
                old = float(group["lr"])
                new = max(old * self.factor, min_lr)
                if old - new > self.eps:
                    group["lr"] = new
            self.cooldown_counter = self.cooldown
            self.num_bad_epochs = 0
        self._last_lr = _lrs(self.optimizer)

    def get_lr(self) -> list:
        return _lrs(self.optimizer)
