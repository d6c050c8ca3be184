"""SDProp: gradients divided by the running standard deviation of past gradients."""
from __future__ import annotations

from .. import functional as F
from .optimizer import Optimizer


class SDProp(Optimizer):
    r"""SDProp (Ida, Fujiwara & Iwamura, IJCAI 2017), in the form of the authors'
    official code (``torch7-sdprop``, ``sdprop.lua``).

    Per element, at step t (from 1), with all state starting at 0::

        g     <- (maximize ? -grad : grad) + weight_decay * theta
        d     =  g - mu                       (the OLD mean)
        mu    <- mu + (1 - gamma) * d         (= gamma mu + (1 - gamma) g)
        c     <- gamma * (c + (1 - gamma) * d^2)
        theta <- theta - lr * sqrt(1 - gamma^t) * g / (sqrt(c) + eps)

    ``c`` is the incremental exponentially weighted variance of the gradients;
    unlike centred RMSprop, eps is added after the square root, the old mean is
    used, and only the step factor ``sqrt(1 - gamma^t)`` corrects the bias.
    State: ``exp_avg`` (mu), ``exp_var`` (c) and ``step``.
    """

    def __init__(self, params, lr=1e-3, gamma=0.99, eps=1e-8, weight_decay=0, *, maximize=False,
                 skip_nonfinite=False, foreach=None, fused=None, capturable=False, differentiable=False):
        defaults = dict(lr=lr, gamma=gamma, eps=eps, weight_decay=weight_decay, maximize=maximize)
        super().__init__(params, defaults, skip_nonfinite=skip_nonfinite)

    def _state_names(self, group):
        return ["exp_avg", "exp_var"]

    def _update(self, group, params, grads, states, step):
        F.sdprop_(params, grads, states["exp_avg"], states["exp_var"], step=step, lr=float(group["lr"]),
                  gamma=float(group["gamma"]), eps=float(group["eps"]), weight_decay=float(group["weight_decay"]),
                  maximize=bool(group["maximize"]))
