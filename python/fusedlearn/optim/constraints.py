"""Constraints applied to parameters after each optimizer step.

:class:`GRUSpectralConstraint` — Kanai, Fujiwara & Iwamura, "Preventing gradient explosions
in gated recurrent units", NIPS 2017 (docs/math/gru_constraint.md).
"""
from __future__ import annotations

import math

import numpy as np

from . import _params as P

__all__ = ["GRUSpectralConstraint"]


def _is_gru_module(m) -> bool:
    """A GRU layer of fusedlearn or torch (duck-typed: both name the class GRU and keep
    ``hidden_size`` / ``num_layers``), so this module does not import the layer."""
    return type(m).__name__ == "GRU" and hasattr(m, "hidden_size") and hasattr(m, "num_layers")


def _is_module(x) -> bool:
    return hasattr(x, "modules") and hasattr(x, "named_parameters") and callable(x.modules)


def _numpy_view(p):
    """The numpy array sharing memory with parameter ``p`` (fusedlearn Parameter, torch tensor, array)."""
    if P.is_torch_tensor(p):
        if p.device.type != "cpu":
            raise TypeError("GRUSpectralConstraint: only CPU tensors are supported, got one on "
                            f"{p.device}")
        return p.detach().numpy()
    if isinstance(p, P.Parameter):
        return p.data
    if isinstance(p, np.ndarray):
        return p
    raise TypeError(f"GRUSpectralConstraint: expected GRU modules or 2-D parameters, got {type(p).__name__}")


class _Target:
    """One constrained matrix: where it lives, and what the checks remember about it."""

    __slots__ = ("name", "owner", "rows", "v", "ref", "bound", "sigma")

    def __init__(self, name: str, owner, rows) -> None:
        self.name, self.owner, self.rows = name, owner, rows
        self.v = None  # right singular vector estimate (float64), warm start of the power iteration
        self.ref = None  # the matrix when ``bound`` was established (float64 copy)
        self.bound = math.inf  # an upper bound (exact after an SVD) on sigma_max(ref)
        self.sigma = math.nan  # the latest estimate of sigma_max

    def view(self) -> np.ndarray:
        w = _numpy_view(self.owner)
        return w if self.rows is None else w[self.rows]


def _targets_of(obj, prefix: str = "") -> list:
    if _is_module(obj):
        out = []
        for mname, m in obj.named_modules() if hasattr(obj, "named_modules") else [("", obj)]:
            if not _is_gru_module(m):
                continue
            h = int(m.hidden_size)
            dirs = ("", "_reverse") if getattr(m, "bidirectional", False) else ("",)
            for layer in range(int(m.num_layers)):
                for d in dirs:
                    pname = f"weight_hh_l{layer}{d}"
                    w = getattr(m, pname)
                    if tuple(w.shape) != (3 * h, h):
                        raise ValueError(f"GRUSpectralConstraint: {pname} has shape {tuple(w.shape)}, "
                                         f"expected {(3 * h, h)}")
                    full = ".".join(s for s in (prefix, mname, pname) if s)
                    out.append(_Target(full, w, slice(2 * h, 3 * h)))
        return out
    shape = tuple(getattr(obj, "shape", ()))
    _numpy_view(obj)  # type check
    if len(shape) != 2 or not (shape[0] == shape[1] or shape[0] == 3 * shape[1]):
        raise ValueError("GRUSpectralConstraint: a parameter must be a GRU weight_hh [3H, H] "
                         f"(rows 2H:3H are constrained) or a square [H, H] matrix, got shape {shape}")
    h = shape[1]
    rows = None if shape[0] == shape[1] else slice(2 * h, 3 * h)
    return [_Target(prefix or f"param{shape}", obj, rows)]


class GRUSpectralConstraint:
    """Keep the largest singular value of each GRU's candidate-state recurrent matrix
    at most ``2 - delta`` (Kanai et al., NIPS 2017; docs/math/gru_constraint.md §1-2).

    Why 2: at the fixed point h = 0 (no input, zero biases) r = z = 1/2 and the
    Jacobian of one GRU step is ``J = I/2 + W/4`` with ``W`` the candidate-state
    recurrent matrix, so ``sigma_max(W) < 2`` keeps the fixed point stable; the
    gradient explosions come from the bifurcation where it crosses 2.  After
    each optimizer step the method computes ``W = U diag(sigma) V^T`` and clips
    ``sigma_i <- min(sigma_i, 2 - delta)`` (the paper's Steps 1-3, the other
    parameters keep their plain update).

    Which matrix: rows ``2H:3H`` of ``weight_hh_l{k}[_reverse]`` for every
    layer and direction, i.e. ``W_hn`` in torch's convention (``reset_after=True``,
    n = tanh(W_in x + b_in + r * (W_hn h + b_hn))) and ``U`` in Cho et al.'s
    (``reset_after=False``, n = tanh(W_in x + U (r * h) + b)).  The paper writes
    Cho's form; for both the Jacobian at 0 is ``I/2 + W/4`` (docs/math/gru_constraint.md §1,
    checked by finite differences), so the same block is constrained under both
    conventions.  The gate matrices (rows 0:2H) and the biases are left free.

    Cost (the paper's Sec. 4.4 computes only what can exceed the bound).  Per
    matrix and step, cheapest first:

    1. *Certified skip* (Weyl): ``sigma_max(W) <= bound + ||W - W_ref||_F``,
       where ``W_ref`` is the matrix at the last check and ``bound`` its known
       top singular value; when this is ``<= 2 - delta`` nothing can exceed the
       bound and nothing else is computed.
    2. *Estimate*: ``power_iters`` power iterations on ``W^T W``, warm-started
       from the previous right singular vector (so the iterations accumulate
       over steps while W drifts slowly), give ``s <= sigma_max(W)``.  When
       ``s * (1 + margin) <= 2 - delta`` the matrix is accepted (``bound`` is set
       to ``s * (1 + margin)``).  This filter is a heuristic: a lower bound plus
       a safety margin, not a proof; ``margin=None`` disables it (then step 3
       runs whenever step 1 cannot certify).
    3. *Project*: a full SVD (float64); singular values above the bound are
       clipped (``W -= sum_i (sigma_i - c) u_i v_i^T`` over those above ``c``,
       which leaves W bit-for-bit when nothing exceeds).  ``c`` is ``2 - delta``
       lowered by ``max(8 ulp of the parameter's dtype, 1e-12)`` relative, so
       rounding the result (to float32, or in the float64 reconstruction)
       cannot push it back above ``2 - delta``.

    The first check of each matrix runs the SVD (a cold power iteration is
    unreliable), which also seeds the warm start.

    Arguments: ``modules_or_params`` — a module (every ``GRU`` inside it is
    found: fusedlearn's or ``torch.nn.GRU``), a GRU weight_hh ``[3H, H]``
    (fusedlearn ``Parameter``, CPU torch tensor or numpy array), a square
    ``[H, H]`` matrix (constrained whole), or a list of them.  ``delta``: the
    margin below 2 (0.2, i.e. a threshold of 1.8, as the reimplementation
    named in docs/math/gru_constraint.md §2 uses; the paper's own grid was not retrieved).
    ``optimizer``: when given, :meth:`attach` wraps its ``step`` so the
    constraint runs after every step.

    Counters: ``checks`` (matrix checks), ``certified_skips``, ``estimates``,
    ``svds``, ``projections`` (SVDs that changed the matrix) and
    :attr:`projection_rate` = projections / checks; ``last_sigma`` maps each
    matrix's name to its latest estimate of the top singular value.
    """

    def __init__(self, modules_or_params, delta: float = 0.2, *, power_iters: int = 3, margin=0.05,
                 optimizer=None) -> None:
        delta = float(delta)
        if not 0.0 <= delta < 2.0:
            raise ValueError(f"GRUSpectralConstraint: delta must be in [0, 2), got {delta}")
        if isinstance(power_iters, bool) or not isinstance(power_iters, (int, np.integer)) or power_iters < 1:
            raise ValueError(f"GRUSpectralConstraint: power_iters must be an integer >= 1, got {power_iters!r}")
        if margin is not None and not float(margin) >= 0.0:
            raise ValueError(f"GRUSpectralConstraint: margin must be >= 0 or None, got {margin}")
        self.delta = delta
        self.threshold = 2.0 - delta
        self.power_iters = int(power_iters)
        self.margin = None if margin is None else float(margin)
        items = [modules_or_params] if (_is_module(modules_or_params) or hasattr(modules_or_params, "shape")) \
            else list(modules_or_params)
        self.targets = []
        for i, item in enumerate(items):
            self.targets.extend(_targets_of(item, "" if len(items) == 1 else str(i)))
        if not self.targets:
            raise ValueError("GRUSpectralConstraint: found no GRU layer or matrix to constrain")
        self.checks = self.certified_skips = self.estimates = self.svds = self.projections = 0
        if optimizer is not None:
            self.attach(optimizer)

    # ---- public ---------------------------------------------------------------------
    @property
    def projection_rate(self) -> float:
        return self.projections / self.checks if self.checks else 0.0

    @property
    def last_sigma(self) -> dict:
        return {t.name: t.sigma for t in self.targets}

    def step(self) -> int:
        """Check every matrix (and project where needed); returns how many were projected."""
        return sum(self._check(t) for t in self.targets)

    def attach(self, optimizer):
        """Run :meth:`step` after every ``optimizer.step(...)``; returns the optimizer."""
        inner = optimizer.step

        def step(*args, **kwargs):
            out = inner(*args, **kwargs)
            self.step()
            return out

        optimizer.step = step
        return optimizer

    def sigma_max(self) -> dict:
        """The exact top singular value of every constrained matrix (an SVD each; for monitoring)."""
        return {t.name: float(np.linalg.norm(t.view().astype(np.float64), 2)) for t in self.targets}

    def stats(self) -> dict:
        return {"checks": self.checks, "certified_skips": self.certified_skips, "estimates": self.estimates,
                "svds": self.svds, "projections": self.projections, "projection_rate": self.projection_rate}

    def __repr__(self) -> str:
        return (f"GRUSpectralConstraint(delta={self.delta}, matrices={len(self.targets)}, "
                f"power_iters={self.power_iters}, margin={self.margin})")

    # ---- the three stages -------------------------------------------------------------
    def _check(self, t: _Target) -> bool:
        self.checks += 1
        w = t.view()
        wd = w.astype(np.float64)
        c = self.threshold
        if t.ref is not None:
            drift = float(np.linalg.norm(wd - t.ref))
            if t.bound + drift <= c:
                self.certified_skips += 1
                return False
            if self.margin is not None:
                self.estimates += 1
                s = self._power(t, wd)
                if s * (1.0 + self.margin) <= c:
                    t.ref, t.bound, t.sigma = wd, s * (1.0 + self.margin), s
                    return False
        return self._project(t, w, wd)

    def _power(self, t: _Target, wd: np.ndarray) -> float:
        v = t.v
        s = 0.0
        for _ in range(self.power_iters):
            u = wd @ v
            s = float(np.linalg.norm(u))
            if s == 0.0:
                break
            v = wd.T @ (u / s)
            n = float(np.linalg.norm(v))
            if n == 0.0:
                break
            v /= n
        # ||W v|| with the final unit v: a lower bound of sigma_max, exact at convergence.
        s = float(np.linalg.norm(wd @ v))
        t.v, t.sigma = v, s
        return s

    def _project(self, t: _Target, w: np.ndarray, wd: np.ndarray) -> bool:
        self.svds += 1
        u, s, vt = np.linalg.svd(wd)
        # Clip slightly below the threshold so that neither the cast back to w's dtype nor the
        # rounding of the reconstruction pushes it back above 2 - delta.
        c = self.threshold * (1.0 - max(8.0 * float(np.finfo(w.dtype).eps), 1e-12))
        over = s > c
        t.v = vt[0].copy()
        changed = bool(over.any())
        if changed:
            k = int(over.sum())  # singular values come sorted, the excess ones first
            exact = wd - (u[:, :k] * (s[:k] - c)) @ vt[:k]
            np.copyto(w, exact, casting="unsafe")
            wd = w.astype(np.float64)  # what is stored now, rounding included
            self.projections += 1
            s = np.minimum(s, c)
            # Weyl again: the rounding moved the exact result by at most this much.
            t.ref, t.bound, t.sigma = wd, float(s[0]) + float(np.linalg.norm(wd - exact)), float(s[0])
        else:
            t.ref, t.bound, t.sigma = wd, float(s[0]), float(s[0])
        return changed
