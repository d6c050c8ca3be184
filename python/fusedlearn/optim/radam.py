"""RAdam: Adam whose adaptive step is rectified for the variance of its early estimates."""
from __future__ import annotations

from .. import functional as F
from .optimizer import Optimizer, check_hyper


class RAdam(Optimizer):
    r"""RAdam (Liu et al., ICLR 2020), as ``torch.optim.RAdam``.

    Per element, at step t (from 1), with ``betas = (b1, b2)``::

        theta <- theta * (1 - lr * weight_decay)          (decoupled_weight_decay only)
        g     <- (maximize ? -grad : grad) + weight_decay * theta   (L2, unless decoupled)
        m     <- b1 * m + (1 - b1) * g
        v     <- b2 * v + (1 - b2) * g^2
        rho_inf = 2 / (1 - b2) - 1;   rho_t = rho_inf - 2 t b2^t / (1 - b2^t)
        if rho_t > 5:
            r_t   = sqrt((rho_t - 4)(rho_t - 2) rho_inf / ((rho_inf - 4)(rho_inf - 2) rho_t))
            theta <- theta - lr r_t / (1 - b1^t) * m * sqrt(1 - b2^t) / (sqrt(v) + eps)
        else:
            theta <- theta - lr / (1 - b1^t) * m

    State: ``exp_avg`` (m), ``exp_avg_sq`` (v) and ``step``.
    """

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0,
                 decoupled_weight_decay=False, *, foreach=None, maximize=False, capturable=False,
                 differentiable=False, skip_nonfinite=False):
        check_hyper(lr=lr, eps=eps, betas=betas, weight_decay=weight_decay)
        defaults = dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay, maximize=maximize,
                        foreach=foreach, capturable=capturable, decoupled_weight_decay=decoupled_weight_decay,
                        differentiable=differentiable)
        super().__init__(params, defaults, skip_nonfinite=skip_nonfinite)

    def _state_names(self, group):
        return ["exp_avg", "exp_avg_sq"]

    def _update(self, group, params, grads, states, step):
        beta1, beta2 = group["betas"]
        F.radam_(params, grads, states["exp_avg"], states["exp_avg_sq"], step=step, lr=float(group["lr"]),
                 beta1=float(beta1), beta2=float(beta2), eps=float(group["eps"]),
                 weight_decay=float(group["weight_decay"]),
                 decoupled_weight_decay=bool(group["decoupled_weight_decay"]), maximize=bool(group["maximize"]))
