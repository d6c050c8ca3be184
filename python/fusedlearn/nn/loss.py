"""Losses that return ``(loss, grad)`` in one pass: ``loss_fn(pred, target)``.

``grad`` is the gradient of the (reduced) loss with respect to ``pred``, ready
for ``model.backward(grad)``.  With ``reduction='none'`` the loss is the array
of per-sample losses and ``grad`` the gradient of their sum.
"""
from __future__ import annotations

import numpy as np

from .module import Module, as_float_input

_REDUCTIONS = ("mean", "sum", "none")


class _Loss(Module):
    def __init__(self, reduction: str = "mean") -> None:
        super().__init__()
        if reduction not in _REDUCTIONS:
            raise ValueError(f"{type(self).__name__}: reduction must be one of {_REDUCTIONS}, got {reduction!r}")
        self.reduction = reduction

    def backward(self, grad_out=None):
        raise RuntimeError(f"{type(self).__name__} returns its gradient from the call: loss, grad = loss_fn(pred, y)")

    def extra_repr(self) -> str:
        return f"reduction={self.reduction!r}"


def _log_softmax(z: np.ndarray) -> np.ndarray:
    m = z.max(axis=1, keepdims=True)
    shifted = z - m
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


class CrossEntropyLoss(_Loss):
    """``torch.nn.CrossEntropyLoss``: log-softmax + negative log-likelihood, fused.

    ``pred``: logits ``[N, C]``, or ``[N, C, d1, ...]`` (classes on axis 1, as in
    torch; see :class:`SequenceCrossEntropyLoss` for classes last).  ``target``:
    class indices ``[N]`` / ``[N, d1, ...]`` (integers in ``[0, C)``;
    ``ignore_index`` entries are skipped) or class probabilities of ``pred``'s shape.  ``weight``: per-class weights ``[C]``.  ``label_smoothing``
    ``eps`` mixes the target with the uniform distribution, as torch defines it::

        loss_i = (1 - eps) * w[y_i] * (-log p[i, y_i]) + eps / C * sum_c w[c] * (-log p[i, c])

    and ``'mean'`` divides the sum by ``sum_i w[y_i]`` (by ``N`` for probability
    targets).  The softmax is computed from the shifted logits, so large logits
    neither overflow nor lose precision.
    """

    def __init__(self, weight=None, ignore_index: int = -100, reduction: str = "mean",
                 label_smoothing: float = 0.0) -> None:
        super().__init__(reduction)
        if weight is not None:
            weight = np.asarray(weight, dtype=np.float64)
            if weight.ndim != 1:
                raise ValueError(f"CrossEntropyLoss: weight must be 1-D (one per class), got shape {weight.shape}")
        self.weight = weight
        self.ignore_index = int(ignore_index)
        if not 0.0 <= float(label_smoothing) <= 1.0:
            raise ValueError(f"CrossEntropyLoss: label_smoothing must be in [0, 1], got {label_smoothing}")
        self.label_smoothing = float(label_smoothing)

    def extra_repr(self) -> str:
        return f"reduction={self.reduction!r}, label_smoothing={self.label_smoothing}"

    def forward(self, pred, target):
        z = as_float_input(pred, "CrossEntropyLoss (pred)")
        if z.ndim < 2:
            raise ValueError(f"CrossEntropyLoss: pred must be logits of shape (N, C) or (N, C, d1, ...), got {z.shape}")
        if z.ndim == 2:
            return self._reduce(*self._rows(z, target), z)
        # torch's (N, C, d1, ...) layout: classes on axis 1; the math runs on rows (N*d1*..., C).
        t = _target_array(target)
        c = z.shape[1]
        zr = np.moveaxis(z, 1, -1)
        if t.dtype.kind == "f":
            if t.shape != z.shape:
                raise TypeError(f"CrossEntropyLoss: a floating-point target must hold class probabilities of "
                                f"pred's shape {z.shape}; got shape {t.shape} (class indices must be integers)")
            t = np.moveaxis(t, 1, -1).reshape(-1, c)
        elif t.shape != (z.shape[0], *z.shape[2:]):
            raise ValueError(f"CrossEntropyLoss: target must have shape {(z.shape[0], *z.shape[2:])} for pred of "
                             f"shape {z.shape}, got {t.shape}")
        else:
            t = t.reshape(-1)
        value, grad = self._reduce(*self._rows(zr.reshape(-1, c), t), zr)
        grad = np.moveaxis(grad.reshape(zr.shape), -1, 1)
        if self.reduction == "none":
            value = value.reshape(zr.shape[:-1])
        return value, grad

    def _rows(self, z: np.ndarray, target, row_weight=None) -> tuple:
        """The math on logits ``z`` ``[n, C]``: ``(per-row losses, gradient of their sum, mean's divisor)``.

        ``row_weight`` ``[n]`` (optional) scales each row's loss; rows of weight 0
        are left out of the mean as ignored targets are."""
        n, c = z.shape
        w = self.weight
        if w is not None and w.shape[0] != c:
            raise ValueError(f"CrossEntropyLoss: weight has {w.shape[0]} entries but pred has {c} classes")
        t = _target_array(target)
        eps = self.label_smoothing
        logp = _log_softmax(z)
        p = np.exp(logp)
        if t.dtype.kind == "f":
            if t.shape != z.shape:
                raise TypeError(f"CrossEntropyLoss: a floating-point target must hold class probabilities of "
                                f"pred's shape {z.shape}; got shape {t.shape} (class indices must be integers)")
            a = t.astype(z.dtype, copy=True)
            if eps:
                a = a * (1 - eps) + eps / c
            if w is not None:
                a = a * w.astype(z.dtype)
            if row_weight is not None:
                a *= row_weight[:, None]
            denom = float(n) if row_weight is None else float(row_weight.sum())
        else:
            if t.dtype.kind not in "iu":
                raise TypeError(f"CrossEntropyLoss: target must hold integer class indices, got dtype {t.dtype}")
            if t.shape != (n,):
                raise ValueError(f"CrossEntropyLoss: target must have shape ({n},) for pred of shape {z.shape}, "
                                 f"got {t.shape}")
            t = t.astype(np.int64)
            valid = t != self.ignore_index
            bad = valid & ((t < 0) | (t >= c))
            if bad.any():
                raise ValueError(f"CrossEntropyLoss: target label {int(t[bad][0])} is out of range for {c} "
                                 f"classes (labels must be in [0, {c - 1}])")
            tv = np.where(valid, t, 0)
            rows = np.arange(n)
            wy = np.ones(n, z.dtype) if w is None else w.astype(z.dtype)[tv]
            wy = wy * valid
            if row_weight is not None:
                wy = wy * row_weight
            a = np.zeros_like(z)
            a[rows, tv] = (1 - eps) * wy
            if eps:
                wc = np.full(c, 1.0, z.dtype) if w is None else w.astype(z.dtype)
                rw = valid.astype(z.dtype) if row_weight is None else valid * row_weight
                a += (eps / c) * wc[None, :] * rw[:, None]
            denom = float(wy.sum())
        per = -(a * logp).sum(axis=1)
        grad = p * a.sum(axis=1, keepdims=True) - a
        return per, grad, denom

    def _reduce(self, per: np.ndarray, grad: np.ndarray, denom: float, z: np.ndarray) -> tuple:
        if self.reduction == "none":
            return per, grad
        total = per.sum()
        if self.reduction == "sum":
            return float(total), grad
        if denom == 0.0:  # every target ignored (torch returns nan)
            return float("nan"), np.zeros_like(grad)
        return float(total / denom), grad / z.dtype.type(denom)


def _target_array(target) -> np.ndarray:
    if hasattr(target, "detach") and hasattr(target, "cpu"):
        target = target.detach().cpu().numpy()
    return np.asarray(target)


class SequenceCrossEntropyLoss(CrossEntropyLoss):
    """Per-timestep cross-entropy for sequence outputs with the classes LAST.

    ``loss_fn(pred, target, mask=None)``: ``pred`` logits ``[..., C]`` (e.g.
    ``[T, B, C]`` from a recurrent model), ``target`` class indices ``[...]``
    (or probabilities of ``pred``'s shape), ``mask`` (optional, ``[...]``) is 1
    for real steps and 0 for padding (a float mask weights the steps).  The
    result equals ``CrossEntropyLoss`` on ``pred.reshape(-1, C)`` with each
    row's loss multiplied by its mask value and the mean taken over the mask
    (times the class weights), so a padded step counts as an ignored target.
    ``ignore_index``, ``weight``, ``label_smoothing`` and ``reduction`` are as
    in ``CrossEntropyLoss`` (``'none'`` returns losses of shape ``[...]``).
    The same code computes both losses.
    """

    def forward(self, pred, target, mask=None):
        z = as_float_input(pred, "SequenceCrossEntropyLoss (pred)")
        if z.ndim < 1:
            raise ValueError("SequenceCrossEntropyLoss: pred must have a class axis (last)")
        c = z.shape[-1]
        lead = z.shape[:-1]
        t = _target_array(target)
        if t.dtype.kind == "f":
            if t.shape != z.shape:
                raise TypeError(f"SequenceCrossEntropyLoss: a floating-point target must hold class "
                                f"probabilities of pred's shape {z.shape}; got shape {t.shape}")
            t = t.reshape(-1, c)
        elif t.shape != lead:
            raise ValueError(f"SequenceCrossEntropyLoss: target must have shape {lead} for pred of shape "
                             f"{z.shape}, got {t.shape}")
        else:
            t = t.reshape(-1)
        rw = None
        if mask is not None:
            m = _target_array(mask)
            if m.shape != lead:
                raise ValueError(f"SequenceCrossEntropyLoss: mask must have shape {lead}, got {m.shape}")
            if m.dtype.kind not in "biuf":
                raise TypeError(f"SequenceCrossEntropyLoss: mask must be boolean or numeric, got {m.dtype}")
            rw = m.reshape(-1).astype(z.dtype)
        value, grad = self._reduce(*self._rows(z.reshape(-1, c), t, rw), z)
        grad = grad.reshape(z.shape)
        if self.reduction == "none":
            value = value.reshape(lead)
        return value, grad


class MSELoss(_Loss):
    """``torch.nn.MSELoss``: mean (or sum) of squared differences; shapes must match."""

    def forward(self, pred, target):
        x = as_float_input(pred, "MSELoss (pred)")
        if hasattr(target, "detach") and hasattr(target, "cpu"):
            target = target.detach().cpu().numpy()
        t = np.asarray(target)
        if t.dtype.kind not in "fiub":
            raise TypeError(f"MSELoss: target must be numeric, got dtype {t.dtype}")
        if t.shape != x.shape:
            raise ValueError(f"MSELoss: pred has shape {x.shape} but target has shape {t.shape}")
        d = x - t.astype(x.dtype, copy=False)
        if self.reduction == "none":
            return d * d, 2 * d
        if self.reduction == "sum":
            return float((d * d).sum()), 2 * d
        n = max(d.size, 1)
        return float(np.vdot(d, d) / n), d * x.dtype.type(2.0 / n)
