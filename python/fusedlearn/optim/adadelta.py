"""Adadelta: step sizes from running averages of squared gradients and squared updates."""
from __future__ import annotations

from .. import functional as F
from .optimizer import Optimizer


class Adadelta(Optimizer):
    r"""Adadelta (Zeiler 2012), as ``torch.optim.Adadelta``.

    Per element::

        g          <- (maximize ? -grad : grad) + weight_decay * theta
        square_avg <- rho * square_avg + (1 - rho) * g^2
        delta      =  sqrt(acc_delta + eps) / sqrt(square_avg + eps) * g
        acc_delta  <- rho * acc_delta + (1 - rho) * delta^2
        theta      <- theta - lr * delta

    State: ``square_avg``, ``acc_delta`` (both start at 0) and ``step``.
    """

    _step_dependent = False

    def __init__(self, params, lr=1.0, rho=0.9, eps=1e-6, weight_decay=0, foreach=None, *, capturable=False,
                 maximize=False, differentiable=False, skip_nonfinite=False):
        defaults = dict(lr=lr, rho=rho, eps=eps, weight_decay=weight_decay, maximize=maximize,
                        capturable=capturable, foreach=foreach, differentiable=differentiable)
        super().__init__(params, defaults, skip_nonfinite=skip_nonfinite)

    def _state_names(self, group):
        return ["square_avg", "acc_delta"]

    def _update(self, group, params, grads, states, step):
        F.adadelta_(params, grads, states["square_avg"], states["acc_delta"], step=step, lr=float(group["lr"]),
                    rho=float(group["rho"]), eps=float(group["eps"]), weight_decay=float(group["weight_decay"]),
                    maximize=bool(group["maximize"]))
