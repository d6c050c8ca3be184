"""Adversarial feature generation in a middle layer (M. Ishii and A. Sato, IJCNN 2019; NEC patent
US 11,580,383), and a plain augmented objective, both as ``objective=`` of :func:`fusedlearn.train.fit`.

For a ``Sequential`` model split at ``k``, ``h = model[:k](x)`` and ``g = model[k:]``::

    r* = argmax_{|r_n| <= eps |h_n|}  KL( softmax g(h) || softmax g(h + r) )      (per sample n)
    L  = loss(g(h), y) + weight * loss(g(h + r*), y)

``r*`` is found by the power iteration of virtual adversarial training (Miyato et al.), an
assumption: the paper's solver was not available (docs/math/weight_decay_adversarial.md §2).
"""
from __future__ import annotations

import math

import numpy as np

from ..nn.container import Sequential
from ..nn.module import Module


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _per_sample_norm(a: np.ndarray) -> np.ndarray:
    """``|a_n|`` (Euclidean, over every non-batch dimension) shaped to broadcast against ``a``."""
    n = np.sqrt(np.square(a.reshape(len(a), -1), dtype=np.float64).sum(axis=1))
    return n.reshape((len(a),) + (1,) * (a.ndim - 1))


def _unit(a: np.ndarray) -> np.ndarray:
    """Each sample of ``a`` scaled to unit norm (a zero sample stays zero)."""
    n = _per_sample_norm(a)
    return (a / np.where(n > 0, n, 1.0)).astype(a.dtype, copy=False)


def kl_divergence(p: np.ndarray, logits_q: np.ndarray) -> np.ndarray:
    """Per-sample ``KL(p || softmax(logits_q))`` for probability rows ``p``."""
    z = logits_q - logits_q.max(axis=1, keepdims=True)
    logq = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(p > 0, p * (np.log(np.where(p > 0, p, 1.0)) - logq), 0.0)
    return t.sum(axis=1)


def _has_params(m) -> bool:
    return any(True for _ in m.parameters())


def _default_splits(model: Sequential) -> list:
    """Split points k (1 <= k < len) where ``model[k]`` has parameters and ``model[:k]`` has some
    too: h is then the output of a block and the input of a weight layer (the "middle layers";
    never the raw or merely reshaped input)."""
    return [k for k in range(1, len(model)) if _has_params(model[k]) and _has_params(model[:k])]


class AdversarialFeatures:
    r"""Train on clean features plus adversarially perturbed middle-layer features.

    For each mini-batch a split point ``k`` is drawn uniformly from ``layers`` (the allowed
    indices: ``h = model[:k](x)``, ``g = model[k:]``; default: every ``k >= 1`` where
    ``model[k]`` holds parameters and so does ``model[:k]``, i.e. the input of each weight layer
    but the first).  Then:

    1. ``p = softmax(g(h))``;  ``d`` ~ N(0, I), unit norm per sample;
    2. ``power_iterations`` times: ``d <- unit( grad_r KL(p || softmax g(h + r)) )`` at
       ``r = xi_n d`` (the gradient is ``g``'s backward of ``softmax(g(h + r)) - p``);
    3. ``r* = eps * |h_n| * d`` per sample, so ``|r*_n| = eps |h_n|`` (the bound, attained;
       a sample whose direction vanishes gets ``r = 0``);
    4. the objective ``loss(g(h), y) + weight * loss(g(h + r*), y)`` is back-propagated through
       ``g`` (twice) and ``model[:k]``, with ``r*`` held constant (stop-gradient, as in VAT).

    ``xi`` is relative: the finite-difference step is ``xi * |h_n|`` per sample, so it does not
    depend on the scale of the layer.  In low precision a tiny step only measures rounding, so the
    step used is ``max(xi, xi_floor)``; ``xi_floor='auto'`` is ``sqrt(machine eps)`` of the
    features' dtype (3.5e-4 for float32, 1.5e-8 for float64: the usual optimal forward-difference
    step), ``xi_floor=0`` uses ``xi`` as given.  The power-iteration passes leave the
    parameters' gradients as they were.  Dropout inside ``g`` draws a fresh mask each pass.

    ``transform`` (e.g. :class:`fusedlearn.data.augment.RandomShiftRotate`) is applied to the
    input batch first: adversarial features on top of data augmentation.

    Use: ``fit(model, loss, opt, data, objective=AdversarialFeatures(model, eps=0.3), ...)``.
    The value logged by fit is the whole objective (clean + weighted adversarial loss).
    """

    def __init__(self, model, eps: float, layers=None, xi: float = 1e-6, power_iterations: int = 1, *,
                 weight: float = 1.0, xi_floor="auto", transform=None, seed=None) -> None:
        if not isinstance(model, Sequential):
            raise TypeError(f"AdversarialFeatures: model must be a fusedlearn.nn.Sequential (it is split into "
                            f"model[:k] and model[k:]), got {type(model).__name__}")
        for name, val in (("eps", eps), ("xi", xi), ("weight", weight)):
            if isinstance(val, bool) or not isinstance(val, (int, float, np.integer, np.floating)):
                raise TypeError(f"AdversarialFeatures: {name} must be a number, got {type(val).__name__}")
        if not math.isfinite(eps) or eps <= 0:
            raise ValueError(f"AdversarialFeatures: eps must be finite and > 0, got {eps}")
        if not math.isfinite(xi) or xi <= 0:
            raise ValueError(f"AdversarialFeatures: xi must be finite and > 0, got {xi}")
        if not math.isfinite(weight) or weight < 0:
            raise ValueError(f"AdversarialFeatures: weight must be finite and >= 0, got {weight}")
        if isinstance(power_iterations, bool) or not isinstance(power_iterations, (int, np.integer)) \
                or power_iterations < 1:
            raise ValueError(f"AdversarialFeatures: power_iterations must be an integer >= 1, got {power_iterations!r}")
        if not (xi_floor == "auto" or (isinstance(xi_floor, (int, float)) and xi_floor >= 0)):
            raise ValueError(f"AdversarialFeatures: xi_floor must be 'auto' or a number >= 0, got {xi_floor!r}")
        if transform is not None and not callable(transform):
            raise TypeError("AdversarialFeatures: transform must be callable on a batch of inputs")
        n = len(model)
        if layers is None:
            layers = _default_splits(model)
            if not layers:
                raise ValueError("AdversarialFeatures: the model has no middle layer to perturb "
                                 "(it needs at least two layers)")
        else:
            layers = [layers] if isinstance(layers, (int, np.integer)) else list(layers)
            if not layers:
                raise ValueError("AdversarialFeatures: layers is empty")
            for k in layers:
                if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
                    raise TypeError(f"AdversarialFeatures: layers must hold integer split points, got {k!r}")
                if not 1 <= k < n:
                    raise ValueError(f"AdversarialFeatures: split point {k} is out of range: h = model[:k](x) "
                                     f"needs 1 <= k < {n} (len(model))")
        self.model = model
        self.eps = float(eps)
        self.layers = [int(k) for k in layers]
        self.xi = float(xi)
        self.xi_floor = xi_floor
        self.power_iterations = int(power_iterations)
        self.weight = float(weight)
        self.transform = transform
        self._rng = np.random.default_rng(seed)
        self.last_split = None

    def manual_seed(self, seed) -> None:
        self._rng = np.random.default_rng(seed)

    def _xi(self, dtype) -> float:
        floor = math.sqrt(float(np.finfo(dtype).eps)) if self.xi_floor == "auto" else float(self.xi_floor)
        return max(self.xi, floor)

    # ---- the perturbation ----------------------------------------------------------------
    def perturbation(self, h: np.ndarray, g: Module, p=None) -> np.ndarray:
        """``r*`` for features ``h`` and upper network ``g`` (clean probabilities ``p`` if known).

        Runs ``g`` forward and backward ``power_iterations`` times; ``g``'s parameter gradients
        are restored afterwards (its cached forward state is not)."""
        h = np.asarray(h)
        if p is None:
            p = _softmax(g(h))
        params = list(g.parameters())
        saved = [q.grad for q in params]
        hn = _per_sample_norm(h)
        step = (self._xi(h.dtype) * hn).astype(h.dtype)
        d = _unit(self._rng.standard_normal(h.shape).astype(h.dtype))
        try:
            for _ in range(self.power_iterations):
                for q in params:
                    q.grad = None
                zq = g(h + step * d)
                d = _unit(np.asarray(g.backward((_softmax(zq) - p).astype(zq.dtype))))
        finally:
            for q, s in zip(params, saved):
                q.grad = s
        return (self.eps * hn * d).astype(h.dtype)

    # ---- the objective -------------------------------------------------------------------
    def loss_and_backward(self, model, loss, x, y, k: int, r=None):
        """Forward and backward of ``loss(g(h), y) + weight * loss(g(h + r), y)`` at split ``k``,
        gradients accumulated into the parameters.  ``r=None`` computes ``r*``; a given ``r``
        is used as it is (held constant).  Returns ``(clean logits, objective value, r)``."""
        f, g = model[:k], model[k:]
        h = f(x)
        z = g(h)
        value, grad = loss(z, y)
        dh = g.backward(grad)
        if r is None:
            r = self.perturbation(h, g, _softmax(z))
        elif np.shape(r) != np.shape(h):
            raise ValueError(f"AdversarialFeatures: r has shape {np.shape(r)}, the features have {np.shape(h)}")
        if self.weight != 0.0:
            za = g(h + r)
            va, ga = loss(za, y)
            dh = dh + g.backward(ga * ga.dtype.type(self.weight))
            value = value + self.weight * va
        f.backward(dh)
        return z, value, r

    def __call__(self, model, loss, xb, yb):
        """The ``objective`` of :func:`fusedlearn.train.fit`: returns ``(clean logits, value)``."""
        if self.transform is not None:
            xb = self.transform(xb)
        k = self.layers[int(self._rng.integers(len(self.layers)))] if len(self.layers) > 1 else self.layers[0]
        self.last_split = k
        out, value, _ = self.loss_and_backward(model, loss, xb, yb, k)
        return out, value

    def __repr__(self) -> str:
        return (f"AdversarialFeatures(eps={self.eps}, layers={self.layers}, xi={self.xi}, "
                f"power_iterations={self.power_iterations}, weight={self.weight})")


def augmented(transform):
    """An ``objective`` for :func:`fusedlearn.train.fit` that trains on ``transform(xb)``
    (data augmentation, e.g. :class:`fusedlearn.data.augment.RandomShiftRotate`)."""
    if not callable(transform):
        raise TypeError(f"augmented: transform must be callable on a batch of inputs, got {transform!r}")

    def objective(model, loss, xb, yb):
        out = model(transform(xb))
        value, grad = loss(out, yb)
        model.backward(grad)
        return out, value

    return objective
