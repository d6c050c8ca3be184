"""Adam and AdamW: bias-corrected first and second moment estimates."""
from __future__ import annotations

from .. import functional as F
from .optimizer import Optimizer


class Adam(Optimizer):
    r"""Adam (Kingma & Ba 2015), as ``torch.optim.Adam``.

    Per element, at step t (from 1), with ``betas = (b1, b2)``::

        theta <- theta * (1 - lr * weight_decay)          (decoupled_weight_decay only)
        g     <- (maximize ? -grad : grad) + weight_decay * theta   (L2, unless decoupled)
        m     <- b1 * m + (1 - b1) * g
        v     <- b2 * v + (1 - b2) * g^2
        vmax  <- max(vmax, v);  v_hat = vmax     (amsgrad; else v_hat = v)
        theta <- theta - lr / (1 - b1^t) * m / (sqrt(v_hat) / sqrt(1 - b2^t) + eps)

    State: ``exp_avg`` (m), ``exp_avg_sq`` (v), ``max_exp_avg_sq`` (amsgrad),
    all starting at 0, and ``step``.
    """

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0, amsgrad=False, *,
                 foreach=None, maximize=False, capturable=False, differentiable=False, fused=None,
                 decoupled_weight_decay=False, skip_nonfinite=False):
        defaults = dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay, amsgrad=amsgrad,
                        maximize=maximize, foreach=foreach, capturable=capturable, differentiable=differentiable,
                        fused=fused, decoupled_weight_decay=decoupled_weight_decay)
        super().__init__(params, defaults, skip_nonfinite=skip_nonfinite)

    def _state_names(self, group):
        names = ["exp_avg", "exp_avg_sq"]
        if group["amsgrad"]:
            names.append("max_exp_avg_sq")
        return names

    def _update(self, group, params, grads, states, step):
        beta1, beta2 = group["betas"]
        kernel = F.adamw_ if group.get("decoupled_weight_decay", False) else F.adam_
        kernel(params, grads, states["exp_avg"], states["exp_avg_sq"], states.get("max_exp_avg_sq"), step=step,
               lr=float(group["lr"]), beta1=float(beta1), beta2=float(beta2), eps=float(group["eps"]),
               weight_decay=float(group["weight_decay"]), amsgrad=bool(group["amsgrad"]),
               maximize=bool(group["maximize"]))


class AdamW(Adam):
    r"""AdamW (Loshchilov & Hutter 2019), as ``torch.optim.AdamW``: Adam with
    decoupled weight decay, ``theta <- theta * (1 - lr * weight_decay)`` before
    the Adam step (see :class:`Adam`), and ``weight_decay=1e-2`` by default.
    """

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2, amsgrad=False, *,
                 maximize=False, foreach=None, capturable=False, differentiable=False, fused=None,
                 skip_nonfinite=False):
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, amsgrad=amsgrad,
                         foreach=foreach, maximize=maximize, capturable=capturable, differentiable=differentiable,
                         fused=fused, decoupled_weight_decay=True, skip_nonfinite=skip_nonfinite)
