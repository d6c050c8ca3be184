"""ASGD: SGD with a decaying step and Polyak-Ruppert averaging of the iterates."""
from __future__ import annotations

import numpy as np

from .. import functional as F
from .optimizer import Optimizer, check_hyper


def _f32(x: float) -> float:
    """torch keeps eta and mu as float32 0-d tensors: round as it does."""
    return float(np.float32(x))


class ASGD(Optimizer):
    r"""Averaged SGD (Polyak & Juditsky 1992; the step of Bottou 2012), as ``torch.optim.ASGD``.

    Not :class:`AccSGD` (Kidambi et al.'s accelerated SGD).  Per element, at step t
    (from 1), with this param's ``eta`` and ``mu`` (scalars, starting at lr and 1)::

        g     <- (maximize ? -grad : grad) + weight_decay * theta
        theta <- theta * (1 - lambd * eta) - eta * g
        ax    <- theta                  if mu == 1
        ax    <- ax + mu * (theta - ax) otherwise
        eta   <- lr / (1 + lambd * lr * t) ** alpha
        mu    <- 1 / max(1, t - t0)

    State: ``eta``, ``mu`` (scalars), ``ax`` (the average) and ``step``.
    """

    _scalar_state = ("eta", "mu")

    def __init__(self, params, lr=1e-2, lambd=1e-4, alpha=0.75, t0=1e6, weight_decay=0, foreach=None,
                 maximize=False, differentiable=False, capturable=False, *, skip_nonfinite=False):
        check_hyper(lr=lr, weight_decay=weight_decay)
        defaults = dict(lr=lr, lambd=lambd, alpha=alpha, t0=t0, weight_decay=weight_decay, foreach=foreach,
                        maximize=maximize, differentiable=differentiable, capturable=capturable)
        super().__init__(params, defaults, skip_nonfinite=skip_nonfinite)

    def _state_names(self, group):
        return ["ax"]

    def _initial_scalars(self, group):
        return {"eta": _f32(group["lr"]), "mu": 1.0}

    def _step_scalars(self, group, state, step):
        return {"eta": float(state["eta"]), "mu": float(state["mu"])}

    def _after_step(self, group, state, step, scalars):
        lr, lambd = float(group["lr"]), float(group["lambd"])
        state["eta"] = _f32(lr / ((1 + lambd * lr * step) ** float(group["alpha"])))
        state["mu"] = _f32(1 / max(1, step - float(group["t0"])))

    def _update(self, group, params, grads, states, step):
        F.asgd_(params, grads, states["ax"], step=step, eta=float(states["eta"]), mu=float(states["mu"]),
                lambd=float(group["lambd"]), weight_decay=float(group["weight_decay"]),
                maximize=bool(group["maximize"]))
