"""Resource-allocating networks: Platt's RAN (1991, LMS updates) and RAN-EKF
(Kadirkamanathan & Niranjan 1993, extended Kalman filter updates).

Both are online Gaussian radial-basis networks that grow: a sample far from
every unit (distance > delta(n)) and badly predicted (|e| > epsilon) becomes a
new unit; otherwise the parameters are updated.  The equations, and the choices
made where the sources differ (the /w versus /w^2 centre update, the first
sample, the width of the first unit), are in docs/math/ran.md.  The per-sample
work (evaluating the units, the update, the covariance pass) runs in the C++
kernels of csrc/cpu/ran.
"""
from __future__ import annotations

import math

import numpy as np

from . import _C

__all__ = ["RAN", "RANEKF", "NotFittedError"]


class NotFittedError(ValueError, AttributeError):
    """predict / score before any fit or partial_fit (as scikit-learn's)."""


def _as_2d(X, name: str) -> np.ndarray:
    a = np.asarray(X, dtype=np.float64)
    if a.ndim != 2:
        raise ValueError(f"{name}: expected a 2-D array (n_samples, n_features), got shape {a.shape}")
    if a.shape[0] == 0:
        raise ValueError(f"{name}: no samples")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} contains NaN or infinity")
    return np.ascontiguousarray(a)


class _RANBase:
    _ekf = False

    def __init__(self, *, delta_max=0.7, delta_min=0.07, tau=45.0, epsilon=0.02, kappa=0.87,
                 centre_update="platt", random_state=None):
        self.delta_max = delta_max
        self.delta_min = delta_min
        self.tau = tau
        self.epsilon = epsilon
        self.kappa = kappa
        self.centre_update = centre_update
        self.random_state = random_state

    # ---- checks -------------------------------------------------------
    def _check_params(self):
        name = type(self).__name__
        for key in ("delta_max", "delta_min", "tau", "kappa"):
            v = getattr(self, key)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
                raise ValueError(f"{name}: {key} must be a positive finite number, got {v!r}")
        if not self.delta_min <= self.delta_max:
            raise ValueError(f"{name}: need delta_min <= delta_max, got {self.delta_min} > {self.delta_max}")
        if not (math.isfinite(self.epsilon) and self.epsilon >= 0):
            raise ValueError(f"{name}: epsilon must be >= 0, got {self.epsilon!r}")
        if self.centre_update not in ("platt", "gradient"):
            raise ValueError(f"{name}: centre_update must be 'platt' (/w) or 'gradient' (/w^2), "
                             f"got {self.centre_update!r}")

    def _check_xy(self, X, y):
        X = _as_2d(X, "X")
        y = np.asarray(y, dtype=np.float64)
        if y.ndim not in (1, 2):
            raise ValueError(f"y: expected a 1-D or 2-D array, got shape {y.shape}")
        if y.shape[0] != X.shape[0]:
            raise ValueError(f"X and y have different numbers of samples: {X.shape[0]} and {y.shape[0]}")
        if not np.all(np.isfinite(y)):
            raise ValueError("y contains NaN or infinity")
        Y = np.ascontiguousarray(y.reshape(y.shape[0], -1))
        if hasattr(self, "n_features_in_"):
            if X.shape[1] != self.n_features_in_:
                raise ValueError(f"X has {X.shape[1]} features, but {type(self).__name__} was fitted with "
                                 f"{self.n_features_in_}")
            if Y.shape[1] != self._m:
                raise ValueError(f"y has {Y.shape[1]} outputs, but {type(self).__name__} was fitted with {self._m}")
        return X, Y, y.ndim == 1

    def _check_fitted(self):
        if not hasattr(self, "n_features_in_"):
            raise NotFittedError(f"This {type(self).__name__} instance is not fitted yet; "
                                 "call fit or partial_fit first")

    # ---- state --------------------------------------------------------
    def _start(self, x, y, one_d):
        d, m = x.shape[0], y.shape[0]
        self.n_features_in_, self._m, self._one_d = d, m, one_d
        self.n_units_ = 0
        self.n_samples_seen_ = 1
        self._cap = 0
        self._theta = np.zeros(m)
        self._theta[:m] = y  # the first sample sets the bias (Platt); docs/math/ran.md
        self._widths = np.zeros(0)
        if self._ekf:
            self._P = np.zeros(m * (m + 1) // 2)
            self._P[[i * (i + 1) // 2 + i for i in range(m)]] = self.P0
        self.history_ = {"units": [0], "error": [0.0], "allocated": [False]}
        self._reserve(8)

    def _reserve(self, units):
        if units <= self._cap:
            return
        cap = max(units, 2 * self._cap)
        d, m = self.n_features_in_, self._m
        p_old, p_new = m + self.n_units_ * (m + d), m + cap * (m + d)
        theta = np.zeros(p_new)
        theta[:p_old] = self._theta[:p_old]
        widths = np.zeros(cap)
        widths[:self.n_units_] = self._widths[:self.n_units_]
        self._theta, self._widths = theta, widths
        if self._ekf:
            P = np.zeros(p_new * (p_new + 1) // 2)
            used = p_old * (p_old + 1) // 2
            P[:used] = self._P[:used]
            self._P = P
        self._cap = cap

    def delta(self, n=None):
        """The distance threshold delta(n) = max(delta_max exp(-n / tau), delta_min)."""
        n = self.n_samples_seen_ if n is None else n
        return max(self.delta_max * math.exp(-n / self.tau), self.delta_min)

    def _step(self, x, y):
        self._reserve(self.n_units_ + 1)
        added, err, _ = _C.ran_step(
            self._theta, self._widths, self._P if self._ekf else None, x, y, self.n_units_,
            self.n_features_in_, self._m, self.delta(), float(self.epsilon), float(self.kappa),
            float(getattr(self, "eta", 0.0)), float(getattr(self, "R", 1.0)), float(getattr(self, "P0", 1.0)),
            float(getattr(self, "Q0", 0.0)), self._ekf, 1 if self.centre_update == "platt" else 2)
        if added:
            self.n_units_ += 1
        self.n_samples_seen_ += 1
        h = self.history_
        h["units"].append(self.n_units_)
        h["error"].append(float(np.sqrt(err @ err)))
        h["allocated"].append(bool(added))

    # ---- scikit-learn interface ----------------------------------------
    def partial_fit(self, X, y):
        """Learn from the samples of (X, y) one at a time, in order."""
        self._check_params()
        X, Y, one_d = self._check_xy(X, y)
        start = 0
        if not hasattr(self, "n_features_in_"):
            self._start(X[0], Y[0], one_d)
            start = 1
        for i in range(start, X.shape[0]):
            self._step(X[i], Y[i])
        return self

    def fit(self, X, y, epochs: int = 1, shuffle: bool = False):
        """Forget any previous fit and make ``epochs`` online passes over (X, y)
        (in order, or in a fresh random order per pass with ``shuffle=True``,
        drawn from ``random_state``)."""
        if not (isinstance(epochs, (int, np.integer)) and epochs >= 1):
            raise ValueError(f"epochs must be a positive integer, got {epochs!r}")
        self._check_params()
        for key in ("n_features_in_", "_m"):
            if hasattr(self, key):
                delattr(self, key)
        X, Y, _ = self._check_xy(X, y)
        rng = np.random.default_rng(self.random_state)
        for _ in range(epochs):
            order = rng.permutation(X.shape[0]) if shuffle else np.arange(X.shape[0])
            self.partial_fit(X[order], Y[order] if Y.shape[1] > 1 or np.ndim(y) == 2 else Y[order, 0])
        return self

    def predict(self, X):
        self._check_fitted()
        X = _as_2d(X, "X")
        if X.shape[1] != self.n_features_in_:
            raise ValueError(f"X has {X.shape[1]} features, but {type(self).__name__} was fitted with "
                             f"{self.n_features_in_}")
        Y = _C.ran_predict(self._theta, self._widths, self.n_units_, self.n_features_in_, self._m, X)
        return Y[:, 0] if self._one_d else Y

    def score(self, X, y):
        """R^2 (the mean over outputs), as scikit-learn's regressors."""
        y = np.asarray(y, dtype=np.float64)
        pred = self.predict(X).reshape(y.shape)
        y2, p2 = y.reshape(y.shape[0], -1), pred.reshape(y.shape[0], -1)
        ss_res = ((y2 - p2) ** 2).sum(axis=0)
        ss_tot = ((y2 - y2.mean(axis=0)) ** 2).sum(axis=0)
        r2 = np.where(ss_tot > 0, 1 - ss_res / np.where(ss_tot > 0, ss_tot, 1), np.where(ss_res == 0, 1.0, 0.0))
        return float(r2.mean())

    def get_params(self, deep=True):
        return {k: getattr(self, k) for k in self._param_names}

    def set_params(self, **params):
        for k, v in params.items():
            if k not in self._param_names:
                raise ValueError(f"Invalid parameter {k!r} for {type(self).__name__}")
            setattr(self, k, v)
        return self

    # ---- fitted parameters ---------------------------------------------
    def _blocks(self):
        self._check_fitted()
        m, d, K = self._m, self.n_features_in_, self.n_units_
        return self._theta[m:m + K * (m + d)].reshape(K, m + d)

    @property
    def centers_(self):
        return self._blocks()[:, self._m:].copy()

    @property
    def weights_(self):
        """Output weights alpha_k, shape (n_units_, n_outputs)."""
        return self._blocks()[:, :self._m].copy()

    @property
    def bias_(self):
        self._check_fitted()
        return self._theta[:self._m].copy()

    @property
    def widths_(self):
        self._check_fitted()
        return self._widths[:self.n_units_].copy()


class RAN(_RANBase):
    """Platt's resource-allocating network: allocation by novelty, LMS otherwise.

    delta_max, delta_min, tau: the distance threshold delta(n) = max(delta_max e^(-n/tau), delta_min);
    epsilon: the error threshold; kappa: the overlap factor (w_new = kappa * distance);
    eta: the LMS step; centre_update: 'platt' (the printed /w) or 'gradient' (/w^2).
    """
    _param_names = ("delta_max", "delta_min", "tau", "epsilon", "kappa", "eta", "centre_update", "random_state")

    def __init__(self, *, delta_max=0.7, delta_min=0.07, tau=45.0, epsilon=0.02, kappa=0.87, eta=0.02,
                 centre_update="platt", random_state=None):
        super().__init__(delta_max=delta_max, delta_min=delta_min, tau=tau, epsilon=epsilon, kappa=kappa,
                         centre_update=centre_update, random_state=random_state)
        self.eta = eta

    def _check_params(self):
        super()._check_params()
        if not (math.isfinite(self.eta) and self.eta > 0):
            raise ValueError(f"RAN: eta must be a positive finite number, got {self.eta!r}")


class RANEKF(_RANBase):
    """RAN-EKF: the same allocation, and an extended Kalman filter update of every
    bias, weight and centre otherwise (widths fixed).

    R: measurement-noise variance; P0: prior variance of a new unit's parameters
    (and of the bias); Q0: random-walk variance added to P's diagonal each step.
    """
    _ekf = True
    _param_names = ("delta_max", "delta_min", "tau", "epsilon", "kappa", "R", "P0", "Q0", "random_state")

    def __init__(self, *, delta_max=0.7, delta_min=0.07, tau=45.0, epsilon=0.02, kappa=0.87, R=1.0, P0=1.0,
                 Q0=0.02, random_state=None):
        super().__init__(delta_max=delta_max, delta_min=delta_min, tau=tau, epsilon=epsilon, kappa=kappa,
                         centre_update="gradient", random_state=random_state)
        self.R, self.P0, self.Q0 = R, P0, Q0

    def _check_params(self):
        super()._check_params()
        for key in ("R", "P0"):
            v = getattr(self, key)
            if not (math.isfinite(v) and v > 0):
                raise ValueError(f"RANEKF: {key} must be a positive finite number, got {v!r}")
        if not (math.isfinite(self.Q0) and self.Q0 >= 0):
            raise ValueError(f"RANEKF: Q0 must be >= 0, got {self.Q0!r}")

    @property
    def P_(self):
        """The EKF covariance of [bias, (alpha_k, c_k) per unit] as a full symmetric matrix."""
        self._check_fitted()
        p = self._m + self.n_units_ * (self._m + self.n_features_in_)
        L = np.zeros((p, p))
        L[np.tril_indices(p)] = self._P[:p * (p + 1) // 2]
        return L + np.tril(L, -1).T
