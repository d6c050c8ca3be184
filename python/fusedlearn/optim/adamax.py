"""Adamax: Adam with the infinity norm in place of the second moment."""
from __future__ import annotations

from .. import functional as F
from .optimizer import Optimizer


class Adamax(Optimizer):
    r"""Adamax (Kingma & Ba 2015, section 7), as ``torch.optim.Adamax``.

    Per element, at step t (from 1), with ``betas = (b1, b2)``::

        g     <- (maximize ? -grad : grad) + weight_decay * theta
        m     <- b1 * m + (1 - b1) * g
        u     <- max(b2 * u, |g| + eps)
        theta <- theta - lr / (1 - b1^t) * m / u

    State: ``exp_avg`` (m), ``exp_inf`` (u), both starting at 0, and ``step``.
    """

    def __init__(self, params, lr=2e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0, foreach=None, *,
                 maximize=False, differentiable=False, capturable=False, skip_nonfinite=False):
        defaults = dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay, foreach=foreach,
                        maximize=maximize, differentiable=differentiable, capturable=capturable)
        super().__init__(params, defaults, skip_nonfinite=skip_nonfinite)

    def _state_names(self, group):
        return ["exp_avg", "exp_inf"]

    def _update(self, group, params, grads, states, step):
        beta1, beta2 = group["betas"]
        F.adamax_(params, grads, states["exp_avg"], states["exp_inf"], step=step, lr=float(group["lr"]),
                  beta1=float(beta1), beta2=float(beta2), eps=float(group["eps"]),
                  weight_decay=float(group["weight_decay"]), maximize=bool(group["maximize"]))
