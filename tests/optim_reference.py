"""Plain float64 numpy reference implementations of every update rule,
written from the published algorithms (torch.optim's documented pseudo-code,
Ida et al. 2017 for SDProp, Kidambi et al. 2018 for AccSGD).  Slow and
obvious on purpose: the fused kernels are held against these."""
import math

import numpy as np


def _grad(p, g, maximize, wd):
    g = -g if maximize else g
    return g + wd * p if wd else g


def sgd(p, g, st, t, lr=1e-3, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False, maximize=False):
    d = _grad(p, g, maximize, weight_decay)
    if momentum:
        if t == 1:
            st["momentum_buffer"] = d.copy()
        else:
            st["momentum_buffer"] = momentum * st["momentum_buffer"] + (1 - dampening) * d
        d = d + momentum * st["momentum_buffer"] if nesterov else st["momentum_buffer"]
    return p - lr * d


def adagrad(p, g, st, t, lr=1e-2, lr_decay=0.0, weight_decay=0.0, eps=1e-10, maximize=False):
    d = _grad(p, g, maximize, weight_decay)
    clr = lr / (1 + (t - 1) * lr_decay)
    st["sum"] = st["sum"] + d * d
    return p - clr * d / (np.sqrt(st["sum"]) + eps)


def adadelta(p, g, st, t, lr=1.0, rho=0.9, eps=1e-6, weight_decay=0.0, maximize=False):
    d = _grad(p, g, maximize, weight_decay)
    st["square_avg"] = rho * st["square_avg"] + (1 - rho) * d * d
    delta = np.sqrt(st["acc_delta"] + eps) / np.sqrt(st["square_avg"] + eps) * d
    st["acc_delta"] = rho * st["acc_delta"] + (1 - rho) * delta * delta
    return p - lr * delta


def rmsprop(p, g, st, t, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0, centered=False,
            maximize=False):
    d = _grad(p, g, maximize, weight_decay)
    st["square_avg"] = alpha * st["square_avg"] + (1 - alpha) * d * d
    if centered:
        st["grad_avg"] = alpha * st["grad_avg"] + (1 - alpha) * d
        avg = np.sqrt(st["square_avg"] - st["grad_avg"] ** 2) + eps
    else:
        avg = np.sqrt(st["square_avg"]) + eps
    if momentum > 0:
        st["momentum_buffer"] = momentum * st["momentum_buffer"] + d / avg
        return p - lr * st["momentum_buffer"]
    return p - lr * d / avg


def adam(p, g, st, t, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0, amsgrad=False, maximize=False,
         decoupled=False):
    if decoupled:
        p = p * (1 - lr * weight_decay)
        d = _grad(p, g, maximize, 0.0)
    else:
        d = _grad(p, g, maximize, weight_decay)
    st["exp_avg"] = beta1 * st["exp_avg"] + (1 - beta1) * d
    st["exp_avg_sq"] = beta2 * st["exp_avg_sq"] + (1 - beta2) * d * d
    v = st["exp_avg_sq"]
    if amsgrad:
        st["max_exp_avg_sq"] = np.maximum(st["max_exp_avg_sq"], v)
        v = st["max_exp_avg_sq"]
    mhat = st["exp_avg"] / (1 - beta1 ** t)
    vhat = v / (1 - beta2 ** t)
    return p - lr * mhat / (np.sqrt(vhat) + eps)


def adamw(p, g, st, t, weight_decay=1e-2, **kw):
    return adam(p, g, st, t, weight_decay=weight_decay, decoupled=True, **kw)


def adamax(p, g, st, t, lr=2e-3, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0, maximize=False):
    d = _grad(p, g, maximize, weight_decay)
    st["exp_avg"] = beta1 * st["exp_avg"] + (1 - beta1) * d
    st["exp_inf"] = np.maximum(beta2 * st["exp_inf"], np.abs(d) + eps)
    return p - lr / (1 - beta1 ** t) * st["exp_avg"] / st["exp_inf"]


def accsgd(p, g, st, t, lr=1e-3, kappa=1000.0, xi=10.0, small_const=0.7, weight_decay=0.0, maximize=False):
    """Kidambi et al. (2018), Algorithm 1, in its original two-sequence form."""
    d = _grad(p, g, maximize, weight_decay)
    if "wbar" not in st:
        st["wbar"] = p.copy()
    alpha = 1.0 - small_const ** 2 * xi / kappa
    zeta = small_const / (small_const + (1.0 - alpha))
    st["wbar"] = alpha * st["wbar"] + (1 - alpha) * (p - (kappa * lr / small_const) * d)
    return zeta * (p - lr * d) + (1 - zeta) * st["wbar"]


def sdprop(p, g, st, t, lr=1e-3, gamma=0.99, eps=1e-8, weight_decay=0.0, maximize=False):
    """Ida et al. (2017), official Torch7 code."""
    d = _grad(p, g, maximize, weight_decay)
    mu_old = st["exp_avg"]
    st["exp_var"] = gamma * st["exp_var"] + gamma * (1 - gamma) * (d - mu_old) ** 2
    st["exp_avg"] = gamma * mu_old + (1 - gamma) * d
    return p - lr * math.sqrt(1 - gamma ** t) * d / (np.sqrt(st["exp_var"]) + eps)
