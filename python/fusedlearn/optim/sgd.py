"""SGD with optional (Nesterov) momentum, dampening and L2 weight decay."""
from __future__ import annotations

from .. import functional as F
from .optimizer import Optimizer


class SGD(Optimizer):
    r"""Stochastic gradient descent, as ``torch.optim.SGD``.

    Per element, with learning rate :math:`\gamma`, momentum :math:`\mu`,
    dampening :math:`\tau` and weight decay :math:`\lambda`::

        g <- (maximize ? -grad : grad) + lambda * theta
        if mu != 0:
            b <- g                           on a param's first step
            b <- mu * b + (1 - tau) * g      afterwards
            g <- g + mu * b   (nesterov)   or   g <- b
        theta <- theta - gamma * g

    State: ``momentum_buffer`` (only when ``momentum != 0``).  Nesterov needs a
    positive momentum and zero dampening.
    """

    _has_step = False

    def __init__(self, params, lr=1e-3, momentum=0, dampening=0, weight_decay=0, nesterov=False, *,
                 maximize=False, foreach=None, differentiable=False, fused=None, skip_nonfinite=False):
        defaults = dict(lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay,
                        nesterov=nesterov, maximize=maximize, foreach=foreach, differentiable=differentiable,
                        fused=fused)
        super().__init__(params, defaults, skip_nonfinite=skip_nonfinite)

    def _state_names(self, group):
        return ["momentum_buffer"] if float(group["momentum"]) != 0 else []

    def _kernel_step(self, state, created):
        # The kernel sets a buffer to the gradient at step 1 and decays it after.
        return 1 if "momentum_buffer" in created else 2

    def _update(self, group, params, grads, states, step):
        F.sgd_(params, grads, states.get("momentum_buffer"), step=step, lr=float(group["lr"]),
               momentum=float(group["momentum"]), dampening=float(group["dampening"]),
               weight_decay=float(group["weight_decay"]), nesterov=bool(group["nesterov"]),
               maximize=bool(group["maximize"]))
