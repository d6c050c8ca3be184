"""Rprop: per-element step sizes driven by the sign of the gradient alone."""
from __future__ import annotations

from .. import functional as F
from .optimizer import Optimizer, check_hyper


class Rprop(Optimizer):
    r"""Resilient backpropagation (Riedmiller & Braun 1993), as ``torch.optim.Rprop``.

    Per element, with ``etas = (eta_minus, eta_plus)`` and
    ``step_sizes = (s_min, s_max)``; ``prev`` starts at 0 and ``step_size`` at lr::

        g = maximize ? -grad : grad
        if g * prev > 0:   step_size <- min(step_size * eta_plus, s_max)
        if g * prev < 0:   step_size <- max(step_size * eta_minus, s_min);  g <- 0
        theta <- theta - sign(g) * step_size
        prev  <- g

    (the clamp to [s_min, s_max] is applied in every case).  State: ``prev``,
    ``step_size`` and ``step``.
    """

    def __init__(self, params, lr=1e-2, etas=(0.5, 1.2), step_sizes=(1e-6, 50), *, capturable=False,
                 foreach=None, maximize=False, differentiable=False, skip_nonfinite=False):
        check_hyper(lr=lr)
        if not 0.0 < etas[0] < 1.0 < etas[1]:
            raise ValueError(f"Invalid eta values: {etas[0]}, {etas[1]}")
        defaults = dict(lr=lr, etas=tuple(etas), step_sizes=tuple(step_sizes), foreach=foreach,
                        maximize=maximize, differentiable=differentiable, capturable=capturable)
        super().__init__(params, defaults, skip_nonfinite=skip_nonfinite)

    def _state_names(self, group):
        return ["prev", "step_size"]

    def _init_value(self, group, name):
        return float(group["lr"]) if name == "step_size" else 0.0

    # Only the state carries the step: one call per group and dtype.
    _step_dependent = False

    def _update(self, group, params, grads, states, step):
        etaminus, etaplus = group["etas"]
        smin, smax = group["step_sizes"]
        F.rprop_(params, grads, states["prev"], states["step_size"], step=step, etaminus=float(etaminus),
                 etaplus=float(etaplus), step_size_min=float(smin), step_size_max=float(smax),
                 maximize=bool(group["maximize"]))
