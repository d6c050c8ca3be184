"""AccSGD: the accelerated SGD of Kidambi, Netrapalli, Jain & Kakade (ICLR 2018)."""
from __future__ import annotations

from .. import functional as F
from .optimizer import Optimizer


class AccSGD(Optimizer):
    r"""Accelerated SGD of Kidambi et al. 2018 ("On the insufficiency of existing
    momentum schemes for stochastic optimization"; the authors' ``AccSGD.py``).
    Not ``torch.optim.ASGD``, which is averaged SGD.

    The paper's two-sequence recurrence, with short step ``lr`` (delta), long-step
    parameter ``kappa``, statistical-advantage parameter ``xi`` and ``small_const``
    (e)::

        alpha = 1 - e^2 * xi / kappa;  beta = 1 - alpha;  zeta = e / (e + beta)
        g     <- (maximize ? -grad : grad) + weight_decay * w
        wbar  <- alpha * wbar + (1 - alpha) * (w - kappa * lr / e * g)     (wbar starts at w)
        w     <- zeta * (w - lr * g) + (1 - zeta) * wbar

    is computed exactly, in its quasi-hyperbolic-momentum form, with one buffer
    ``b`` that starts at 0::

        b <- mu * b + (1 - mu) * g
        w <- w - eta * ((1 - nu) * g + nu * b)
        eta = lr * e (1 + xi) / (1 + e),  nu = (e xi - 1) / (e (1 + xi)),
        mu  = (kappa - e^2 xi) / (kappa + e xi)

    Needs ``kappa >= 1``, ``0 < xi <= sqrt(kappa)``, ``0 < small_const <= 1``.
    State: ``momentum_buffer`` (b) and ``step``.
    """

    _step_dependent = False

    def __init__(self, params, lr=1e-3, kappa=1000.0, xi=10.0, small_const=0.7, weight_decay=0, *,
                 maximize=False, skip_nonfinite=False, foreach=None, fused=None, capturable=False,
                 differentiable=False):
        defaults = dict(lr=lr, kappa=kappa, xi=xi, small_const=small_const, weight_decay=weight_decay,
                        maximize=maximize)
        super().__init__(params, defaults, skip_nonfinite=skip_nonfinite)

    def _state_names(self, group):
        return ["momentum_buffer"]

    def _update(self, group, params, grads, states, step):
        F.accsgd_(params, grads, states["momentum_buffer"], step=step, lr=float(group["lr"]),
                  kappa=float(group["kappa"]), xi=float(group["xi"]), small_const=float(group["small_const"]),
                  weight_decay=float(group["weight_decay"]), maximize=bool(group["maximize"]))
