"""L2 / layer-wise / L1 weight penalties: coefficients per parameter, optimizer param groups, ``apply``.

Layer-wise adaptive weight decay (M. Ishii and A. Sato, "Layer-wise weight decay for deep
neural networks", PSIVT 2017; NEC Technical Journal 14(1); NEC patent US 11,263,511).  With
SGD, layer i takes the step ``w_i <- w_i - mu * (grad_i + lambda_i * w_i)``.  One
``lambda`` for every layer gives a different balance between the gradient (the
"accelerator") and the decay (the "brake") in every layer, because the scale of the
back-propagated gradient depends on the layers above.  The method picks::

    |lambda_i * w_i| / |grad_i| = c     for every layer,  i.e.  lambda_i = c * |grad_i| / |w_i|

with one constant ``c`` to tune.  The gradient scales are measured once on the
initialised network (the patent: "determined from the initialised network, before
training"), expressed as ratios between adjacent layers ``rho_i = |grad_i| / |grad_{i+1}|``
(:attr:`LayerwiseWeightDecay.adjacent_ratios`); the last layer's coefficient then fixes
all others: ``lambda_i = lambda_L * (prod_{j>=i} rho_j) * |w_L| / |w_i|``.
"""
from __future__ import annotations

import math
from collections import OrderedDict

import numpy as np

from ..data.dataset import as_dataset
from ..nn.module import Module

_ESTIMATORS = ("loss", "random")
_ANCHORS = ("ratio", "last")


def weight_layers(model) -> list:
    """``(name, module)`` of every module holding a ``weight`` parameter with 2 or more dimensions
    (Linear, convolutions, ...), in registration order, which for a ``Sequential`` is the forward
    order: the layers the weight decay of the paper acts on.  1-D weights (batch-norm scales) are
    not connection weights and are left out."""
    if not isinstance(model, Module):
        raise TypeError(f"expected a fusedlearn.nn.Module, got {type(model).__name__}")
    out = []
    for name, m in model.named_modules():
        w = m._parameters.get("weight")
        if w is not None and w.data.ndim >= 2:
            out.append((name, m))
    return out


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def _nonneg_number(value, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{what} must be a number, got {type(value).__name__}")
    v = float(value)
    if not math.isfinite(v) or v < 0:
        raise ValueError(f"{what} must be finite and >= 0, got {value}")
    return v


class _Penalty:
    """Coefficients per parameter for the weights (and optionally biases) of a model's weight layers."""

    def __init__(self, model, include_bias: bool) -> None:
        self.model = model
        self.layers = weight_layers(model)
        if not self.layers:
            raise ValueError(f"{type(self).__name__}: the model has no weight layers "
                             "(modules with a 2-D or higher 'weight' parameter)")
        self.include_bias = bool(include_bias)
        self.layer_coefficients = [0.0] * len(self.layers)

    # ---- which parameters belong to layer i ------------------------------------------------
    def _layer_params(self, i: int) -> list:
        """``(full name, Parameter)`` decayed with layer i's coefficient."""
        name, m = self.layers[i]
        out = [(_join(name, "weight"), m.weight)]
        b = m._parameters.get("bias")
        if self.include_bias and b is not None:
            out.append((_join(name, "bias"), b))
        return out

    def _coefficient_of(self) -> dict:
        """id(Parameter) -> coefficient, for the decayed parameters."""
        out = {}
        for i, lam in enumerate(self.layer_coefficients):
            for _, p in self._layer_params(i):
                out[id(p)] = lam
        return out

    @property
    def coefficients(self) -> "OrderedDict[str, float]":
        """The coefficient of every parameter of the model by its torch-style name
        (0.0 for the parameters left undecayed: biases unless ``include_bias``, 1-D weights)."""
        by_id = self._coefficient_of()
        return OrderedDict((n, float(by_id.get(id(p), 0.0))) for n, p in self.model.named_parameters())

    def _decayed(self):
        """``(Parameter, coefficient)`` for every parameter with a non-zero coefficient."""
        for i, lam in enumerate(self.layer_coefficients):
            if lam != 0.0:
                for _, p in self._layer_params(i):
                    yield p, lam

    def _penalty_grad(self, p, lam):
        raise NotImplementedError

    def apply(self) -> None:
        """Add the penalty's gradient to ``p.grad`` of every decayed parameter that has a gradient
        (a parameter without one is skipped, as the optimizers skip it).  Use this with an
        optimizer whose own ``weight_decay`` is 0, or wrap it with :func:`with_penalty`."""
        for p, lam in self._decayed():
            if p.grad is not None:
                p.grad += self._penalty_grad(p.data, lam).astype(p.grad.dtype, copy=False)

    def __repr__(self) -> str:
        lams = ", ".join(f"{n or '<model>'}: {lam:.4g}" for (n, _), lam in zip(self.layers, self.layer_coefficients))
        return f"{type(self).__name__}({lams}; include_bias={self.include_bias})"


class _WeightDecay(_Penalty):
    """An L2 penalty ``sum_i lambda_i / 2 * |w_i|^2``: gradient ``lambda_i * w_i``."""

    def _penalty_grad(self, w, lam):
        return lam * w

    def penalty(self) -> float:
        """The penalty's value ``sum_i lambda_i / 2 * |w_i|_F^2``."""
        return float(sum(0.5 * lam * float(np.vdot(p.data, p.data)) for p, lam in self._decayed()))

    def param_groups(self, **hyper) -> list:
        """Parameter groups for any :mod:`fusedlearn.optim` optimizer: one per weight layer with
        ``weight_decay = lambda_i`` (named ``(name, param)`` entries), then one group with
        ``weight_decay = 0`` for the other parameters.  ``hyper`` (e.g. ``lr=...``) is copied
        into every group.  The optimizer's fused kernel then adds ``lambda_i * w`` to the gradient
        in its single pass (for AdamW, whose decay is decoupled, it shrinks ``w`` by
        ``lr * lambda_i`` instead)."""
        if "params" in hyper or "weight_decay" in hyper:
            raise ValueError("param_groups: 'params' and 'weight_decay' are set by the regulariser")
        groups, taken = [], set()
        for i, lam in enumerate(self.layer_coefficients):
            named = self._layer_params(i)
            taken.update(id(p) for _, p in named)
            groups.append({"params": named, "weight_decay": float(lam), **hyper})
        rest = [(n, p) for n, p in self.model.named_parameters() if id(p) not in taken]
        if rest:
            groups.append({"params": rest, "weight_decay": 0.0, **hyper})
        return groups

    def update_optimizer(self, optimizer) -> None:
        """Write the current coefficients into ``optimizer``'s groups (built from :meth:`param_groups`).

        Raises ``ValueError`` when a group mixes parameters with different coefficients."""
        by_id = self._coefficient_of()
        for gi, group in enumerate(optimizer.param_groups):
            lams = {float(by_id.get(id(p), 0.0)) for p in group["params"]}
            if len(lams) > 1:
                raise ValueError(f"update_optimizer: parameter group {gi} mixes parameters with different "
                                 "coefficients; build the optimizer from param_groups()")
            if lams:
                group["weight_decay"] = lams.pop()


class L2(_WeightDecay):
    """Plain L2 weight decay: the same ``weight_decay`` for every weight layer (the baseline).

    Biases get no decay unless ``include_bias``."""

    def __init__(self, model, weight_decay: float, *, include_bias: bool = False) -> None:
        super().__init__(model, include_bias)
        lam = _nonneg_number(weight_decay, "L2: weight_decay")
        self.layer_coefficients = [lam] * len(self.layers)


class L1(_Penalty):
    """L1 penalty ``strength * sum |w|`` over the weight layers: :meth:`apply` adds
    ``strength * sign(w)`` (a subgradient, 0 at w = 0) to the gradients.  The fused
    optimizers have no L1 term, so it is applied explicitly (see :func:`with_penalty`)."""

    def __init__(self, model, strength: float, *, include_bias: bool = False) -> None:
        super().__init__(model, include_bias)
        lam = _nonneg_number(strength, "L1: strength")
        self.layer_coefficients = [lam] * len(self.layers)

    def _penalty_grad(self, w, lam):
        return lam * np.sign(w)

    def penalty(self) -> float:
        return float(sum(lam * float(np.abs(p.data).sum()) for p, lam in self._decayed()))


class LayerwiseWeightDecay(_WeightDecay):
    r"""Layer-wise adaptive weight decay (Ishii & Sato 2017): ``lambda_i = c * |grad_i| / |w_i|``.

    ``c`` is the one constant to tune.  With ``anchor='ratio'`` (default) it is the ratio
    ``|lambda_i w_i| / |grad_i|`` itself, the same for every layer; with ``anchor='last'`` it is
    the last weight layer's coefficient ``lambda_L`` (the paper's parametrisation: tune the last
    layer like a plain L2 coefficient, the others follow from the estimated ratios).  At
    estimation time both give the same ratio in every layer; they differ by one global factor.

    **Statistics.**  ``|w_i|`` is the Frobenius norm of layer i's weight at estimation time.
    ``|grad_i|`` is the mean over ``num_batches`` mini-batches (of ``batch_size``, drawn with
    ``seed``) of the Frobenius norm of the mini-batch gradient of the loss, computed on the
    network as it is (no update).  The Frobenius norm makes ``|lambda w| / |grad|`` the ratio of
    the lengths of the two parts of a layer's SGD step; the RMS (norm / sqrt(size)) gives the
    same ratio, since ``w_i`` and its gradient have the same size.  The mean of per-batch norms
    (rather than the norm of the mean gradient) is what the SGD step sees, noise included, and
    does not shrink with ``num_batches``.  Gradient scales are kept as the ratios between
    adjacent layers ``rho_i = |grad_i| / |grad_{i+1}|`` (:attr:`adjacent_ratios`), from which
    ``lambda_i = lambda_L * (prod_{j>=i} rho_j) * |w_L| / |w_i|``.

    **Estimators.**  ``estimator='loss'`` (default) back-propagates ``loss(model(x), y)`` over
    batches of ``data`` (an ``ArrayDataset`` or ``(x, y)``).  ``estimator='random'`` needs only
    inputs: it back-propagates a random output gradient (i.i.d. normal, of the size a
    mean-reduced loss gives), which measures how the network itself scales gradients between
    layers without labels.  The paper's own estimator of the adjacent ratios was not available
    (docs/math/weight_decay_adversarial.md §1); both are empirical readings of it.

    **Fixed or re-estimated.**  By default the coefficients are computed once, here, from the
    initialised network, as the patent describes.  ``reestimate_every=k`` (optimizer steps) or
    ``'epoch'`` re-runs the estimation during training when this object is passed to
    :func:`fusedlearn.train.fit` as a callback, and writes the new coefficients into the
    optimizer's groups (:meth:`update_optimizer`); :meth:`reestimate` does it by hand.  The
    parameters' gradients are saved and restored around an estimation.

    **Biases** get no decay by default (``include_bias=False``): the seed's equation is written
    for the connection weights ``w_i``; with ``include_bias=True`` a bias takes its layer's
    ``lambda_i``.  Parameters outside weight layers (1-D batch-norm scales, ...) get none.

    Use: ``opt = fl.optim.SGD(lwd.param_groups(), lr=0.05, momentum=0.9)`` (the fused kernels
    apply ``lambda_i * w_i``), or ``lwd.apply()`` after ``backward`` with an optimizer built
    otherwise.  :attr:`coefficients` gives ``lambda`` per parameter name,
    :attr:`layer_coefficients` per layer.
    """

    def __init__(self, model, c: float, data=None, loss=None, *, anchor: str = "ratio", estimator: str = "loss",
                 num_batches: int = 10, batch_size: int = 64, include_bias: bool = False, reestimate_every=None,
                 seed=0) -> None:
        super().__init__(model, include_bias)
        self.c = _nonneg_number(c, "LayerwiseWeightDecay: c")
        if anchor not in _ANCHORS:
            raise ValueError(f"LayerwiseWeightDecay: anchor must be one of {_ANCHORS}, got {anchor!r}")
        if estimator not in _ESTIMATORS:
            raise ValueError(f"LayerwiseWeightDecay: estimator must be one of {_ESTIMATORS}, got {estimator!r}")
        if data is None:
            raise ValueError("LayerwiseWeightDecay: data is required to measure the gradient scales")
        if estimator == "loss" and loss is None:
            raise ValueError("LayerwiseWeightDecay: estimator='loss' needs the loss (e.g. nn.CrossEntropyLoss())")
        if isinstance(num_batches, bool) or int(num_batches) != num_batches or int(num_batches) < 1:
            raise ValueError(f"LayerwiseWeightDecay: num_batches must be an integer >= 1, got {num_batches}")
        if isinstance(batch_size, bool) or int(batch_size) != batch_size or int(batch_size) < 1:
            raise ValueError(f"LayerwiseWeightDecay: batch_size must be an integer >= 1, got {batch_size}")
        if reestimate_every is not None and reestimate_every != "epoch":
            if isinstance(reestimate_every, bool) or not isinstance(reestimate_every, (int, np.integer)) \
                    or reestimate_every < 1:
                raise ValueError("LayerwiseWeightDecay: reestimate_every must be None, 'epoch' or an integer >= 1, "
                                 f"got {reestimate_every!r}")
        if estimator == "random" and not (isinstance(data, (tuple, list)) and len(data) == 2) \
                and not hasattr(data, "batches"):
            data = (data, None)  # bare inputs
        self.data = as_dataset(data, "LayerwiseWeightDecay: data")
        if len(self.data) == 0:
            raise ValueError("LayerwiseWeightDecay: data is empty")
        if estimator == "loss" and self.data.y is None:
            raise ValueError("LayerwiseWeightDecay: estimator='loss' needs targets in data")
        self.loss = loss
        self.anchor = anchor
        self.estimator = estimator
        self.num_batches = int(num_batches)
        self.batch_size = int(batch_size)
        self.reestimate_every = reestimate_every
        self._rng = np.random.default_rng(seed)
        self._steps = 0
        self.grad_scales: list = []
        self.weight_norms: list = []
        self.adjacent_ratios: list = []
        self.reestimate()

    # ---- estimation ---------------------------------------------------------------------
    def _measure(self) -> list:
        """Mean over mini-batches of each weight layer's gradient Frobenius norm (no update)."""
        weights = [m.weight for _, m in self.layers]
        params = list(self.model.parameters())
        saved = [p.grad for p in params]
        sums = np.zeros(len(weights))
        try:
            for b, batch in enumerate(self.data.batches(self.batch_size, shuffle=True, seed=self._rng)):
                xb, yb = batch if self.data.y is not None else (batch, None)
                if b == self.num_batches:
                    break
                for p in params:
                    p.grad = None
                out = self.model(xb)
                if self.estimator == "loss":
                    _, grad = self.loss(out, yb)
                else:
                    grad = (self._rng.standard_normal(out.shape) / len(out)).astype(out.dtype)
                self.model.backward(grad)
                sums += [0.0 if w.grad is None else float(np.linalg.norm(w.grad)) for w in weights]
            nb = min(b + 1, self.num_batches)
        finally:
            for p, g in zip(params, saved):
                p.grad = g
        return [float(v) for v in sums / nb]

    def reestimate(self) -> None:
        """Measure the gradient scales of the network as it is now and recompute the coefficients."""
        s = self._measure()
        n = [float(np.linalg.norm(m.weight.data)) for _, m in self.layers]
        for (name, _), ni in zip(self.layers, n):
            if ni == 0.0:
                raise ValueError(f"LayerwiseWeightDecay: the weight of layer {name!r} is all zeros; "
                                 "lambda = c * |grad| / |w| is undefined (initialise the network first)")
        if s[-1] == 0.0:
            raise ValueError(f"LayerwiseWeightDecay: the last weight layer {self.layers[-1][0]!r} gets a zero "
                             "gradient; the gradient-scale ratios are undefined")
        self.grad_scales, self.weight_norms = s, n
        # rho_i = s_i / s_{i+1}; the scale of layer i relative to the last is their product.
        self.adjacent_ratios = [float(s[i] / s[i + 1]) if s[i + 1] > 0 else math.inf for i in range(len(s) - 1)]
        rel = [1.0] * len(s)
        for i in range(len(s) - 2, -1, -1):
            rel[i] = self.adjacent_ratios[i] * rel[i + 1] if math.isfinite(self.adjacent_ratios[i]) else s[i] / s[-1]
        lam_last = self.c if self.anchor == "last" else self.c * s[-1] / n[-1]
        self.layer_coefficients = [lam_last * rel[i] * n[-1] / n[i] for i in range(len(s))]

    def ratios(self) -> list:
        """``|lambda_i w_i| / |grad_i|`` per layer from the last estimation (all equal by construction)."""
        return [lam * n / s if s > 0 else math.inf
                for lam, n, s in zip(self.layer_coefficients, self.weight_norms, self.grad_scales)]

    # ---- as a fit callback: re-estimation during training --------------------------------
    def _refresh(self, state: dict) -> None:
        self.reestimate()
        opt = state.get("optimizer")
        if opt is not None and hasattr(opt, "param_groups"):
            self.update_optimizer(opt)

    def on_batch_end(self, batch: int, logs: dict, state: dict) -> None:
        self._steps += 1
        k = self.reestimate_every
        if isinstance(k, (int, np.integer)) and self._steps % int(k) == 0:
            self._refresh(state)

    def on_epoch_end(self, epoch: int, logs: dict, state: dict) -> None:
        if self.reestimate_every == "epoch":
            self._refresh(state)


class _PenalizedOptimizer:
    """An optimizer whose ``step()`` first adds the penalties' gradients (``reg.apply()``)."""

    def __init__(self, optimizer, penalties) -> None:
        object.__setattr__(self, "optimizer", optimizer)
        object.__setattr__(self, "penalties", tuple(penalties))

    def step(self, closure=None, **kwargs):
        loss = closure() if closure is not None else None
        for reg in self.penalties:
            reg.apply()
        self.optimizer.step(**kwargs)
        return loss

    def __getattr__(self, name):
        return getattr(self.optimizer, name)

    def __setattr__(self, name, value):
        setattr(self.optimizer, name, value)

    def __repr__(self) -> str:
        return f"with_penalty({self.optimizer!r}, {', '.join(map(repr, self.penalties))})"


def with_penalty(optimizer, *penalties):
    """Wrap ``optimizer`` so that each ``step()`` first calls ``apply()`` of every penalty
    (e.g. :class:`L1`), for training loops such as :func:`fusedlearn.train.fit` that call
    ``optimizer.step()`` themselves.  Everything else (``param_groups``, ``zero_grad``,
    ``state_dict``, ...) is the wrapped optimizer's."""
    if not hasattr(optimizer, "step") or not hasattr(optimizer, "param_groups"):
        raise TypeError(f"with_penalty: expected an optimizer, got {type(optimizer).__name__}")
    for reg in penalties:
        if not isinstance(reg, _Penalty):
            raise TypeError(f"with_penalty: expected L1 / L2 / LayerwiseWeightDecay, got {type(reg).__name__}")
    return _PenalizedOptimizer(optimizer, penalties)
