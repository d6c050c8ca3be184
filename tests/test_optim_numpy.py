"""fusedlearn.optim on numpy parameters: AccSGD and SDProp against their papers'
recurrences in float64, state dicts, (array, grad) pairs, and bad input."""
import math

import numpy as np
import pytest

import fusedlearn.optim as fo
from fusedlearn.nn import Parameter

RNG = np.random.default_rng(7)
A = RNG.standard_normal((6, 6)) / 3.0
A = A @ A.T + 0.5 * np.eye(6)  # a positive definite quadratic 0.5 w'Aw - b'w
B = RNG.standard_normal(6)
W0 = RNG.standard_normal(6)
NOISE = RNG.standard_normal((40, 6)) * 0.3


def quad_grad(w, t):
    return A @ w - B + NOISE[t]


def accsgd_paper(w0, steps, lr, kappa=1000.0, xi=10.0, e=0.7, wd=0.0, maximize=False):
    """Kidambi et al. 2018, Algorithm 1: two sequences, wbar starting as a copy of w."""
    alpha = 1.0 - e * e * xi / kappa
    beta = 1.0 - alpha
    zeta = e / (e + beta)
    w, wbar = w0.copy(), w0.copy()
    for t in range(steps):
        g = quad_grad(w, t)
        if maximize:
            g = -g
        g = g + wd * w
        wbar = alpha * wbar + (1.0 - alpha) * (w - (kappa * lr / e) * g)
        w = zeta * (w - lr * g) + (1.0 - zeta) * wbar
    return w


def sdprop_paper(theta0, grads, lr=1e-3, gamma=0.99, eps=1e-8, wd=0.0, maximize=False):
    """Ida et al. 2017 (official code), in the paper's form: c uses the old mean."""
    theta = np.array(theta0, dtype=np.float64)
    mu = np.zeros_like(theta)
    c = np.zeros_like(theta)
    for t, g in enumerate(grads, start=1):
        g = grads_fn(g, theta)
        if maximize:
            g = -g
        g = g + wd * theta
        c = gamma * c + gamma * (1.0 - gamma) * (g - mu) ** 2
        mu = gamma * mu + (1.0 - gamma) * g
        theta = theta - lr * math.sqrt(1.0 - gamma ** t) * g / (np.sqrt(c) + eps)
    return theta, mu, c


def grads_fn(g, theta):
    return g(theta) if callable(g) else np.asarray(g, dtype=np.float64)


def train_quadratic(opt, p, steps, use_pair_grad=None):
    for t in range(steps):
        g = quad_grad(p.data.astype(np.float64), t).astype(p.data.dtype)
        if use_pair_grad is not None:
            use_pair_grad[...] = g  # the pair's grad array is written in place
        else:
            p.grad = g
        opt.step()


# ---- SDProp -----------------------------------------------------------------------------

def test_sdprop_test_vector():
    p = Parameter(np.array([0.5]))
    opt = fo.SDProp([p], lr=1e-3, gamma=0.99, eps=1e-8)
    want_theta = [0.4989949623, 0.4977204855, 0.4984298961]
    want_mu = [0.01, 0.0299, 0.019601]
    want_c = [0.0099, 0.04900599, 0.0590168008]
    for t, g in enumerate([1.0, 2.0, -1.0]):
        p.grad = np.array([g])
        opt.step()
        assert p.data[0] == pytest.approx(want_theta[t], abs=1e-10)
        assert opt.state[p]["exp_avg"][0] == pytest.approx(want_mu[t], abs=1e-12)
        assert opt.state[p]["exp_var"][0] == pytest.approx(want_c[t], abs=1e-10)
        assert opt.state[p]["step"] == t + 1


@pytest.mark.parametrize("kw", [dict(), dict(lr=1e-2, gamma=0.9, weight_decay=0.1), dict(maximize=True, eps=1e-3)])
def test_sdprop_matches_paper_recurrence(kw):
    shapes = [(4, 3), (5,), (2, 2, 2)]
    datas = [RNG.standard_normal(s) for s in shapes]
    grads = [[RNG.standard_normal(s) for _ in range(25)] for s in shapes]
    params = [Parameter(d.copy()) for d in datas]
    opt = fo.SDProp(params, **kw)
    for t in range(25):
        for p, gs in zip(params, grads):
            p.grad = gs[t]
        opt.step()
    ref_kw = dict(lr=kw.get("lr", 1e-3), gamma=kw.get("gamma", 0.99), eps=kw.get("eps", 1e-8),
                  wd=kw.get("weight_decay", 0.0), maximize=kw.get("maximize", False))
    for p, d, gs in zip(params, datas, grads):
        theta, mu, c = sdprop_paper(d, gs, **ref_kw)
        np.testing.assert_allclose(p.data, theta, rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(opt.state[p]["exp_avg"], mu, rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(opt.state[p]["exp_var"], c, rtol=1e-12, atol=1e-14)
        assert not np.allclose(p.data, d)


def test_sdprop_float32_close_to_float64():
    d = RNG.standard_normal(1000)
    gs = [RNG.standard_normal(1000) for _ in range(20)]
    p = Parameter(d.astype(np.float32))
    opt = fo.SDProp([p], lr=1e-2)
    for g in gs:
        p.grad = g.astype(np.float32)
        opt.step()
    theta, _, _ = sdprop_paper(d.astype(np.float32).astype(np.float64), [g.astype(np.float32) for g in gs], lr=1e-2)
    assert p.data.dtype == np.float32
    np.testing.assert_allclose(p.data, theta, rtol=1e-5, atol=1e-5)


# ---- AccSGD -----------------------------------------------------------------------------

@pytest.mark.parametrize("kw", [
    dict(lr=0.01),
    dict(lr=0.02, kappa=100.0, xi=5.0, small_const=0.5),
    dict(lr=0.01, weight_decay=0.1),
    dict(lr=0.002, maximize=True),
])
def test_accsgd_matches_two_sequence_recurrence(kw):
    p = Parameter(W0.copy())
    opt = fo.AccSGD([p], **kw)
    train_quadratic(opt, p, 40)
    want = accsgd_paper(W0, 40, kw["lr"], kw.get("kappa", 1000.0), kw.get("xi", 10.0), kw.get("small_const", 0.7),
                        kw.get("weight_decay", 0.0), kw.get("maximize", False))
    np.testing.assert_allclose(p.data, want, rtol=1e-10, atol=1e-12)
    assert np.abs(p.data - W0).max() > 1e-2
    assert set(opt.state[p]) == {"momentum_buffer", "step"} and opt.state[p]["step"] == 40


def test_accsgd_float32_pair_close_to_float64():
    w = W0.astype(np.float32)
    g = np.zeros_like(w)
    opt = fo.AccSGD([(w, g)], lr=0.01)
    p = opt.param_groups[0]["params"][0]
    assert p.data is w and p.grad is g
    train_quadratic(opt, p, 40, use_pair_grad=g)
    want = accsgd_paper(W0.astype(np.float32).astype(np.float64), 40, 0.01)
    np.testing.assert_allclose(w, want, rtol=1e-4, atol=1e-5)


def test_accsgd_is_not_plain_sgd():
    p, q = Parameter(W0.copy()), Parameter(W0.copy())
    train_quadratic(fo.AccSGD([p], lr=0.01), p, 10)
    train_quadratic(fo.SGD([q], lr=0.01), q, 10)
    assert np.abs(p.data - q.data).max() > 1e-3


# ---- pairs, mixed params, state dicts -------------------------------------------------------

def test_pairs_and_parameters_in_one_optimizer():
    w1, g1 = np.ones(5, np.float32), np.full(5, 0.5, np.float32)
    p2 = Parameter(np.ones((2, 3), np.float32))
    p2.grad = np.full((2, 3), 0.5, np.float32)
    opt = fo.SGD([(w1, g1), p2], lr=0.1)
    opt.step()
    np.testing.assert_allclose(w1, 0.95)
    np.testing.assert_allclose(p2.data, 0.95)
    g1[...] = 1.0  # the user writes the next gradient into the same array
    opt.step()
    np.testing.assert_allclose(w1, 0.85)
    opt.zero_grad()  # pairs are zeroed in place, parameters set to None
    assert np.all(g1 == 0) and p2.grad is None
    with pytest.raises(ValueError, match="more than one parameter group"):
        opt.add_param_group({"params": [(w1, np.zeros(5, np.float32))]})


def test_mixed_dtypes_in_one_group():
    p32, p64 = Parameter(np.ones(4, np.float32)), Parameter(np.ones(3))
    q32, q64 = Parameter(np.ones(4, np.float32)), Parameter(np.ones(3))
    opt = fo.Adam([p32, p64], lr=0.1)
    refs = [fo.Adam([q32], lr=0.1), fo.Adam([q64], lr=0.1)]
    for t in range(3):
        for p in (p32, p64, q32, q64):
            p.grad = np.full(p.shape, t - 0.5, p.dtype)
        opt.step()
        for r in refs:
            r.step()
    assert p32.dtype == np.float32 and opt.state[p32]["exp_avg"].dtype == np.float32
    np.testing.assert_array_equal(p32.data, q32.data)
    np.testing.assert_array_equal(p64.data, q64.data)
    assert not np.allclose(p64.data, 1.0)


@pytest.mark.parametrize("step_as", ["float", "np_float32"])
def test_state_dict_round_trip_numpy(step_as):
    def make():
        return [Parameter(RNG.standard_normal((3, 4))), Parameter(RNG.standard_normal(7))]

    ps = make()
    opt = fo.SDProp(ps, lr=1e-2)
    gs = [[RNG.standard_normal(p.shape) for p in ps] for _ in range(10)]

    def run(params, o, steps):
        for grads in steps:
            for p, g in zip(params, grads):
                p.grad = g
            o.step()

    run(ps, opt, gs[:4])
    sd = opt.state_dict()
    assert sorted(sd["state"]) == [0, 1] and sd["param_groups"][0]["params"] == [0, 1]
    if step_as == "np_float32":
        for s in sd["state"].values():
            s["step"] = np.array(s["step"], dtype=np.float32)
    qs = [Parameter(p.data.copy()) for p in ps]
    opt2 = fo.SDProp(qs)
    opt2.load_state_dict(sd)
    assert opt2.param_groups[0]["lr"] == 1e-2
    assert opt2.state[qs[0]]["exp_var"] is not opt.state[ps[0]]["exp_var"]  # copied, not shared
    run(ps, opt, gs[4:])
    run(qs, opt2, gs[4:])
    for p, q in zip(ps, qs):
        np.testing.assert_array_equal(p.data, q.data)
        assert float(opt2.state[q]["step"]) == 10.0


def test_step_kept_as_numpy_scalar_array():
    p = Parameter(np.zeros(3))
    opt = fo.Adam([p], lr=0.1)
    p.grad = np.ones(3)
    opt.step()
    opt.state[p]["step"] = np.array(1.0, dtype=np.float32)
    opt.step()
    assert float(opt.state[p]["step"]) == 2.0
    q = Parameter(np.zeros(3))
    ref = fo.Adam([q], lr=0.1)
    q.grad = np.ones(3)
    ref.step()
    ref.step()
    np.testing.assert_array_equal(p.data, q.data)


def test_failed_kernel_call_leaves_no_state():
    p = Parameter(np.zeros(3))
    opt = fo.Adam([p], lr=0.1)
    p.grad = np.ones(3, np.float32)  # dtype differs from the param's
    with pytest.raises(TypeError):
        opt.step()
    assert p not in opt.state
    np.testing.assert_array_equal(p.data, 0.0)
    p.grad = np.ones(3)
    opt.step()
    assert opt.state[p]["step"] == 1.0
    np.testing.assert_allclose(p.data, -0.1, rtol=1e-6)


def test_parameter_class():
    a = np.zeros((2, 3))
    p = Parameter(a)
    assert p.data is a and p.shape == (2, 3) and p.dtype == np.float64 and p.grad is None and p.requires_grad
    assert Parameter([1, 2]).dtype == np.float32
    with pytest.raises(TypeError):
        Parameter(np.arange(3))
    p.grad = np.ones((2, 3))
    p.zero_grad(set_to_none=False)
    assert np.all(p.grad == 0)
    p.zero_grad()
    assert p.grad is None
    assert np.asarray(p) is a


# ---- bad input ------------------------------------------------------------------------------

def _p():
    return Parameter(np.zeros(3, np.float32))


@pytest.mark.parametrize("make", [
    lambda: fo.SGD([_p()], lr=-1),
    lambda: fo.SGD([_p()], lr=0.1, nesterov=True),
    lambda: fo.SGD([_p()], lr=0.1, momentum=-0.5),
    lambda: fo.Adam([_p()], lr=-1),
    lambda: fo.Adam([_p()], betas=(1.0, 0.9)),
    lambda: fo.Adam([_p()], betas=(0.9, -0.1)),
    lambda: fo.AdamW([_p()], eps=-1e-8),
    lambda: fo.AdamW([_p()], weight_decay=-0.1),
    lambda: fo.Adamax([_p()], betas=(0.9, 1.5)),
    lambda: fo.Adagrad([_p()], initial_accumulator_value=-1.0),
    lambda: fo.Adagrad([_p()], lr_decay=-1.0),
    lambda: fo.Adadelta([_p()], rho=1.5),
    lambda: fo.RMSprop([_p()], alpha=-0.1),
    lambda: fo.AccSGD([_p()], xi=100.0),
    lambda: fo.AccSGD([_p()], kappa=0.5),
    lambda: fo.AccSGD([_p()], small_const=0.0),
    lambda: fo.SDProp([_p()], gamma=1.0),
    lambda: fo.SDProp([_p()], lr=float("nan")),
], ids=lambda f: "")
def test_bad_hyperparameters_raise_value_error(make):
    with pytest.raises(ValueError):
        make()


def test_bad_hyperparameters_in_added_group():
    opt = fo.Adam([_p()])
    with pytest.raises(ValueError, match="learning rate"):
        opt.add_param_group({"params": [_p()], "lr": -0.5})
    assert len(opt.param_groups) == 1


def test_empty_param_list():
    with pytest.raises(ValueError, match="optimizer got an empty parameter list"):
        fo.SGD([])
    with pytest.raises(ValueError, match="optimizer got an empty parameter list"):
        fo.Adam(iter([]))


def test_param_in_two_groups():
    p = _p()
    with pytest.raises(ValueError, match="more than one parameter group"):
        fo.SGD([{"params": [p]}, {"params": [p, _p()]}])
    with pytest.raises(ValueError, match="duplicate"):
        fo.SGD([p, p])


@pytest.mark.parametrize("bad", ["abc", 3, object(), None])
def test_non_array_param_raises_type_error(bad):
    with pytest.raises(TypeError):
        fo.SGD([_p(), bad])


def test_bare_arrays_and_sets_raise_type_error():
    with pytest.raises(TypeError, match="bare array"):
        fo.SGD([np.zeros(3)])
    with pytest.raises(TypeError):
        fo.SGD(_p())
    with pytest.raises(TypeError, match="ordered"):
        fo.SGD({_p()})
    with pytest.raises(TypeError):
        fo.SGD([_p()]).add_param_group([_p()])
