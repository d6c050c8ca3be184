"""Adagrad: per-element learning rates from the running sum of squared gradients."""
from __future__ import annotations

from .. import functional as F
from . import _params as P
from .optimizer import Optimizer


class Adagrad(Optimizer):
    r"""Adagrad (Duchi et al. 2011), as ``torch.optim.Adagrad``.

    Per element, at step t (from 1)::

        g     <- (maximize ? -grad : grad) + weight_decay * theta
        clr   =  lr / (1 + (t - 1) * lr_decay)
        sum   <- sum + g^2                     (sum starts at initial_accumulator_value)
        theta <- theta - clr * g / (sqrt(sum) + eps)

    State: ``sum`` and ``step``.  As torch does, the state of the params given
    to the constructor is created at once (so a checkpoint taken before a param
    has a gradient still loads into torch).
    """

    def __init__(self, params, lr=1e-2, lr_decay=0, weight_decay=0, initial_accumulator_value=0, eps=1e-10,
                 foreach=None, *, maximize=False, differentiable=False, fused=None, skip_nonfinite=False):
        if not float(initial_accumulator_value) >= 0.0:
            raise ValueError(f"Invalid initial_accumulator_value value: {initial_accumulator_value}")
        defaults = dict(lr=lr, lr_decay=lr_decay, eps=eps, weight_decay=weight_decay,
                        initial_accumulator_value=initial_accumulator_value, foreach=foreach, maximize=maximize,
                        differentiable=differentiable, fused=fused)
        super().__init__(params, defaults, skip_nonfinite=skip_nonfinite)
        for group in self.param_groups:
            for p in group["params"]:
                self._prepare_state(group, p, P.data_of(p))

    def _state_names(self, group):
        return ["sum"]

    def _init_value(self, group, name):
        return float(group["initial_accumulator_value"])

    def _update(self, group, params, grads, states, step):
        F.adagrad_(params, grads, states["sum"], step=step, lr=float(group["lr"]),
                   lr_decay=float(group["lr_decay"]), weight_decay=float(group["weight_decay"]),
                   eps=float(group["eps"]), maximize=bool(group["maximize"]))
