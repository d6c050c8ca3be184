"""RMSprop: gradients divided by a running root mean square, optionally centred and with momentum."""
from __future__ import annotations

from .. import functional as F
from .optimizer import Optimizer


class RMSprop(Optimizer):
    r"""RMSprop (Tieleman & Hinton 2012), as ``torch.optim.RMSprop``.

    Per element::

        g          <- (maximize ? -grad : grad) + weight_decay * theta
        square_avg <- alpha * square_avg + (1 - alpha) * g^2
        if centered:
            grad_avg <- alpha * grad_avg + (1 - alpha) * g
            avg      =  sqrt(square_avg - grad_avg^2) + eps
        else:
            avg      =  sqrt(square_avg) + eps
        if momentum > 0:
            buf   <- momentum * buf + g / avg
            theta <- theta - lr * buf
        else:
            theta <- theta - lr * g / avg

    State: ``square_avg``, ``momentum_buffer`` (momentum > 0), ``grad_avg``
    (centered), all starting at 0, and ``step``.
    """

    _step_dependent = False

    def __init__(self, params, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0, momentum=0, centered=False,
                 capturable=False, foreach=None, maximize=False, differentiable=False, *, skip_nonfinite=False):
        defaults = dict(lr=lr, momentum=momentum, alpha=alpha, eps=eps, centered=centered,
                        weight_decay=weight_decay, capturable=capturable, foreach=foreach, maximize=maximize,
                        differentiable=differentiable)
        super().__init__(params, defaults, skip_nonfinite=skip_nonfinite)

    def _state_names(self, group):
        names = ["square_avg"]
        if float(group["momentum"]) > 0:
            names.append("momentum_buffer")
        if group["centered"]:
            names.append("grad_avg")
        return names

    def _update(self, group, params, grads, states, step):
        F.rmsprop_(params, grads, states["square_avg"], states.get("momentum_buffer"), states.get("grad_avg"),
                   step=step, lr=float(group["lr"]), alpha=float(group["alpha"]), eps=float(group["eps"]),
                   weight_decay=float(group["weight_decay"]), momentum=float(group["momentum"]),
                   centered=bool(group["centered"]), maximize=bool(group["maximize"]))
