"""fl.ran (RAN, RAN-EKF): the C++ step, evaluation and batched predict
against the float64 numpy reference (tests/ran_reference.py) at every ISA,
the covariance's symmetry and positive definiteness, the scikit-learn
interface and its errors."""
import math

import numpy as np
import pytest

import fusedlearn as fl
from fusedlearn import _C
from ran_reference import evaluate, pack, step


def _random_net(rng, K, d, m):
    b = rng.normal(size=m)
    alpha = rng.normal(size=(K, m))
    C = rng.normal(size=(K, d))
    w = rng.uniform(0.5, 2.0, size=K)
    return b, alpha, C, w


@pytest.mark.parametrize("K,d,m", [(0, 3, 1), (1, 1, 1), (7, 4, 1), (13, 3, 2)])
def test_eval_matches_reference_and_finite_differences(isa, K, d, m):
    rng = np.random.default_rng(K * 10 + d + m)
    b, alpha, C, w = _random_net(rng, K, d, m)
    theta = pack(b, alpha, C)
    x = C[0] + 0.3 * rng.normal(size=d) if K else rng.normal(size=d)
    phi, f, A = _C.ran_eval(theta, w, K, d, m, x)
    rphi, rf, rA, _ = evaluate(b, alpha, C, w, x)
    np.testing.assert_allclose(phi, rphi, rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(f, rf, rtol=1e-13, atol=1e-14)
    np.testing.assert_allclose(A, rA, rtol=1e-12, atol=1e-14)
    # the Jacobian is df/dtheta: central differences in float64
    h = 1e-6
    fd = np.zeros_like(A)
    for i in range(theta.size):
        tp, tm = theta.copy(), theta.copy()
        tp[i] += h
        tm[i] -= h
        fd[:, i] = (_C.ran_eval(tp, w, K, d, m, x)[1] - _C.ran_eval(tm, w, K, d, m, x)[1]) / (2 * h)
    np.testing.assert_allclose(A, fd, rtol=1e-6, atol=1e-8)


def _stream(n, d, m, seed):
    rng = np.random.default_rng(seed)
    X = rng.uniform(-1, 1, size=(n, d))
    Y = np.stack([np.sin(3 * X.sum(axis=1) + j) for j in range(m)], axis=1)
    return X, Y


def _reference_run(model, X, Y, ekf, centre_power):
    m, d = Y.shape[1], X.shape[1]
    st = {"b": Y[0].copy(), "alpha": np.zeros((0, m)), "C": np.zeros((0, d)), "w": np.zeros(0)}
    if ekf:
        st["P"] = model.P0 * np.eye(m)
    units = [0]
    for n in range(1, X.shape[0]):
        delta = max(model.delta_max * math.exp(-n / model.tau), model.delta_min)
        step(st, X[n], Y[n], delta=delta, epsilon=model.epsilon, kappa=model.kappa,
             eta=getattr(model, "eta", 0.0), ekf=ekf, R=getattr(model, "R", 1.0), P0=getattr(model, "P0", 1.0),
             Q0=getattr(model, "Q0", 0.0), centre_power=centre_power)
        units.append(len(st["w"]))
    return st, units


@pytest.mark.parametrize("m", [1, 2])
@pytest.mark.parametrize("centre_update", ["platt", "gradient"])
def test_ran_lms_matches_reference(isa, m, centre_update):
    X, Y = _stream(300, 3, m, seed=m)
    model = fl.ran.RAN(delta_max=0.8, delta_min=0.2, tau=60, epsilon=0.05, kappa=0.9, eta=0.05,
                       centre_update=centre_update)
    model.partial_fit(X[:120], Y[:120]).partial_fit(X[120:], Y[120:])  # in two pieces: same as one stream
    st, units = _reference_run(model, X, Y, ekf=False, centre_power=1 if centre_update == "platt" else 2)
    assert model.history_["units"] == units
    assert model.n_units_ == len(st["w"]) >= 5
    np.testing.assert_allclose(model.widths_, st["w"], rtol=1e-12)
    np.testing.assert_allclose(model.centers_, st["C"], rtol=1e-9, atol=1e-11)
    np.testing.assert_allclose(model.weights_, st["alpha"], rtol=1e-9, atol=1e-11)
    np.testing.assert_allclose(model.bias_, st["b"], rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("m", [1, 3])
def test_ran_ekf_matches_reference(isa, m):
    X, Y = _stream(200, 2, m, seed=10 + m)
    model = fl.ran.RANEKF(delta_max=0.8, delta_min=0.25, tau=50, epsilon=0.05, kappa=0.8, R=0.5, P0=1.5, Q0=0.01)
    model.fit(X, Y)
    st, units = _reference_run(model, X, Y, ekf=True, centre_power=2)
    assert model.history_["units"] == units
    assert model.n_units_ == len(st["w"]) >= 5
    np.testing.assert_allclose(model.centers_, st["C"], rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(model.weights_, st["alpha"], rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(model.bias_, st["b"], rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(model.P_, st["P"], rtol=1e-8, atol=1e-10)


def test_ekf_covariance_stays_symmetric_positive_definite(isa):
    x = fl.data.mackey_glass(700, discard=300)
    X = np.stack([x[18:], x[12:-6], x[6:-12], x[:-18]], axis=1)[:-6]
    y = x[24:]
    model = fl.ran.RANEKF(epsilon=0.01, Q0=0.0)  # no Q0 floor: definiteness must come from the update
    P_sizes = []
    for i in range(0, 600, 100):
        model.partial_fit(X[i:i + 100], y[i:i + 100])
        P = model.P_
        P_sizes.append(P.shape[0])
        np.testing.assert_array_equal(P, P.T)
        assert np.linalg.eigvalsh(P).min() > 0
    assert P_sizes[-1] == 1 + 5 * model.n_units_ and P_sizes[-1] > P_sizes[0]


@pytest.mark.parametrize("K,m", [(0, 1), (9, 1), (33, 2)])
def test_predict_batch_matches_reference(isa, K, m):
    rng = np.random.default_rng(K + m)
    d = 4
    b, alpha, C, w = _random_net(rng, K, d, m)
    X = rng.normal(size=(57, d))
    Y = _C.ran_predict(pack(b, alpha, C), w, K, d, m, X)
    ref = np.stack([evaluate(b, alpha, C, w, x)[1] for x in X])
    np.testing.assert_allclose(Y, ref, rtol=1e-12, atol=1e-13)


def test_predict_after_fit_matches_unit_sum():
    X, Y = _stream(150, 3, 1, seed=3)
    model = fl.ran.RAN(delta_min=0.2, epsilon=0.05).fit(X, Y[:, 0])
    pred = model.predict(X)
    assert pred.shape == (150,)
    d2 = ((X[:, None, :] - model.centers_[None]) ** 2).sum(axis=2)
    ref = model.bias_[0] + np.exp(-d2 / model.widths_ ** 2) @ model.weights_[:, 0]
    np.testing.assert_allclose(pred, ref, rtol=1e-12)


def test_score_is_r2_and_fit_restarts():
    sk = pytest.importorskip("sklearn.metrics")
    X, Y = _stream(200, 2, 2, seed=5)
    model = fl.ran.RANEKF(delta_min=0.2, epsilon=0.05)
    model.fit(X, Y)
    assert model.score(X, Y) == pytest.approx(sk.r2_score(Y, model.predict(X)), rel=1e-12)
    units = model.n_units_
    model.fit(X, Y)  # fit forgets the previous state
    assert model.n_units_ == units
    model.fit(X, Y, epochs=2)
    assert len(model.history_["units"]) == 400 and model.history_["units"][-1] == model.n_units_


def test_history_records_units_and_errors():
    X, Y = _stream(100, 2, 1, seed=7)
    model = fl.ran.RAN(delta_min=0.2).fit(X, Y[:, 0])
    h = model.history_
    assert len(h["units"]) == len(h["error"]) == len(h["allocated"]) == 100
    assert sum(h["allocated"]) == model.n_units_
    assert np.all(np.diff(h["units"]) >= 0)


def test_errors():
    X, Y = _stream(20, 3, 1, seed=1)
    y = Y[:, 0]
    with pytest.raises(fl.ran.NotFittedError, match="not fitted yet"):
        fl.ran.RAN().predict(X)
    with pytest.raises(fl.ran.NotFittedError):
        fl.ran.RANEKF().centers_
    with pytest.raises(ValueError, match="different numbers of samples: 20 and 19"):
        fl.ran.RAN().fit(X, y[:-1])
    Xn = X.copy()
    Xn[3, 1] = np.nan
    with pytest.raises(ValueError, match="X contains NaN or infinity"):
        fl.ran.RAN().fit(Xn, y)
    yn = y.copy()
    yn[0] = np.inf
    with pytest.raises(ValueError, match="y contains NaN or infinity"):
        fl.ran.RANEKF().fit(X, yn)
    with pytest.raises(ValueError, match=r"expected a 2-D array \(n_samples, n_features\), got shape \(20,\)"):
        fl.ran.RAN().fit(y, y)
    model = fl.ran.RAN().fit(X, y)
    with pytest.raises(ValueError, match="X has 2 features, but RAN was fitted with 3"):
        model.predict(X[:, :2])
    with pytest.raises(ValueError, match="X has 2 features, but RAN was fitted with 3"):
        model.partial_fit(X[:, :2], y)
    with pytest.raises(ValueError, match="y has 2 outputs, but RAN was fitted with 1"):
        model.partial_fit(X, np.stack([y, y], 1))
    with pytest.raises(ValueError, match="need delta_min <= delta_max"):
        fl.ran.RAN(delta_min=1.0, delta_max=0.5).fit(X, y)
    with pytest.raises(ValueError, match="eta must be a positive finite number"):
        fl.ran.RAN(eta=0).fit(X, y)
    with pytest.raises(ValueError, match="Q0 must be >= 0"):
        fl.ran.RANEKF(Q0=-1.0).fit(X, y)
    with pytest.raises(ValueError, match="centre_update must be 'platt'"):
        fl.ran.RAN(centre_update="w3").fit(X, y)
    with pytest.raises(ValueError, match="epochs must be a positive integer"):
        fl.ran.RAN().fit(X, y, epochs=0)
    with pytest.raises(TypeError, match="theta: expected float64"):
        _C.ran_predict(np.zeros(4, np.float32), np.zeros(0), 0, 3, 1, X)
    with pytest.raises(ValueError, match="theta: has 1 elements, needs at least 5"):
        _C.ran_step(np.zeros(1), np.zeros(1), None, X[0], y[:1], 0, 3, 1, 0.5, 0.1, 0.8, 0.1, 1.0, 1.0, 0.0,
                    False, 1)


def test_shuffled_fit_depends_on_random_state_only():
    X, Y = _stream(120, 2, 1, seed=2)
    a = fl.ran.RAN(random_state=4).fit(X, Y[:, 0], epochs=2, shuffle=True)
    b = fl.ran.RAN(random_state=4).fit(X, Y[:, 0], epochs=2, shuffle=True)
    np.testing.assert_array_equal(a.centers_, b.centers_)
