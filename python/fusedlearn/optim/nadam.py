"""NAdam: Adam with Nesterov momentum and a warming momentum schedule."""
from __future__ import annotations

import numpy as np

from .. import functional as F
from .optimizer import Optimizer, check_hyper


def _f32(x: float) -> float:
    """torch keeps the per-param scalars as float32 0-d tensors: round as it does."""
    return float(np.float32(x))


class NAdam(Optimizer):
    r"""NAdam (Dozat 2016), as ``torch.optim.NAdam``.

    Per element, at step t (from 1), with ``betas = (b1, b2)`` and the momentum
    schedule ``mu_t = b1 * (1 - 0.5 * 0.96 ** (t * momentum_decay))``::

        theta <- theta * (1 - lr * weight_decay)          (decoupled_weight_decay only)
        g     <- (maximize ? -grad : grad) + weight_decay * theta   (L2, unless decoupled)
        P_t   =  mu_1 * ... * mu_t                        (state 'mu_product')
        m     <- b1 * m + (1 - b1) * g
        v     <- b2 * v + (1 - b2) * g^2
        d     =  sqrt(v / (1 - b2^t)) + eps
        theta <- theta - lr (1 - mu_t) / (1 - P_t) * g / d
                       - lr mu_{t+1} / (1 - P_t mu_{t+1}) * m / d

    State: ``exp_avg`` (m), ``exp_avg_sq`` (v), ``mu_product`` (a scalar) and ``step``.
    """

    _scalar_state = ("mu_product",)

    def __init__(self, params, lr=2e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0, momentum_decay=4e-3,
                 decoupled_weight_decay=False, *, foreach=None, maximize=False, capturable=False,
                 differentiable=False, skip_nonfinite=False):
        check_hyper(lr=lr, eps=eps, betas=betas, weight_decay=weight_decay)
        if not 0.0 <= momentum_decay:
            raise ValueError(f"Invalid momentum_decay value: {momentum_decay}")
        defaults = dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay,
                        momentum_decay=momentum_decay, decoupled_weight_decay=decoupled_weight_decay,
                        maximize=maximize, foreach=foreach, capturable=capturable, differentiable=differentiable)
        super().__init__(params, defaults, skip_nonfinite=skip_nonfinite)

    def _state_names(self, group):
        return ["exp_avg", "exp_avg_sq"]

    def _initial_scalars(self, group):
        return {"mu_product": 1.0}

    def _step_scalars(self, group, state, step):
        beta1 = float(group["betas"][0])
        mu = beta1 * (1.0 - 0.5 * 0.96 ** (step * float(group["momentum_decay"])))
        # float32 product, as torch's `mu_product *= mu` on its 0-d float32 tensor
        return {"mu_product": _f32(np.float32(state["mu_product"]) * np.float32(mu))}

    def _after_step(self, group, state, step, scalars):
        state["mu_product"] = scalars["mu_product"]

    def _update(self, group, params, grads, states, step):
        beta1, beta2 = group["betas"]
        F.nadam_(params, grads, states["exp_avg"], states["exp_avg_sq"], step=step, lr=float(group["lr"]),
                 beta1=float(beta1), beta2=float(beta2), eps=float(group["eps"]),
                 weight_decay=float(group["weight_decay"]), momentum_decay=float(group["momentum_decay"]),
                 mu_product=float(states["mu_product"]),
                 decoupled_weight_decay=bool(group["decoupled_weight_decay"]), maximize=bool(group["maximize"]))
