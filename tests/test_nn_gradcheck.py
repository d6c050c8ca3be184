"""Finite-difference gradient checks (float64) of every layer, container and loss."""
import numpy as np
import pytest

import fusedlearn as fl
from fusedlearn import nn

EPS = 1e-6


def _numgrad(f, arr, idx_list):
    out = []
    for idx in idx_list:
        old = arr[idx]
        arr[idx] = old + EPS
        fp = f()
        arr[idx] = old - EPS
        fm = f()
        arr[idx] = old
        out.append((fp - fm) / (2 * EPS))
    return np.array(out)


def _sample(shape, rng, k=24):
    idx = list(np.ndindex(*shape))
    if len(idx) > k:
        idx = [idx[i] for i in rng.choice(len(idx), k, replace=False)]
    return idx


def check_module(m, x, rng=None, before_forward=None, tol=1e-6):
    """Compare backward() with central differences of sum(forward(x) * r)."""
    rng = rng or np.random.default_rng(0)
    m.double()
    x = np.array(x, dtype=np.float64)

    def fwd():
        if before_forward:
            before_forward()
        return m(x)

    out = fwd()
    r = rng.standard_normal(out.shape)
    m.zero_grad()
    gx = m.backward(r)
    assert gx.shape == x.shape

    def f():
        return float(np.sum(fwd() * r))

    idx = _sample(x.shape, rng)
    np.testing.assert_allclose(np.array([gx[i] for i in idx]), _numgrad(f, x, idx), rtol=tol, atol=tol)
    for name, p in m.named_parameters():
        assert p.grad is not None, name
        idx = _sample(p.shape, rng)
        num = _numgrad(f, p.data, idx)
        np.testing.assert_allclose(np.array([p.grad[i] for i in idx]), num, rtol=tol, atol=tol, err_msg=name)


@pytest.mark.parametrize("activation", [None, "relu", "tanh", "sigmoid"])
def test_linear(activation):
    rng = np.random.default_rng(1)
    m = nn.Linear(7, 5, activation=activation, generator=rng)
    check_module(m, rng.standard_normal((6, 7)), rng)


def test_linear_no_bias_and_3d_input():
    rng = np.random.default_rng(2)
    check_module(nn.Linear(4, 3, bias=False, generator=rng), rng.standard_normal((2, 5, 4)), rng)


@pytest.mark.parametrize("cls", [nn.ReLU, nn.Tanh, nn.Sigmoid])
def test_activations(cls):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((5, 6))
    x[np.abs(x) < 1e-3] = 0.5  # keep away from relu's kink
    check_module(cls(), x, rng)


def test_dropout_fixed_mask():
    rng = np.random.default_rng(4)
    d = nn.Dropout(0.4, seed=7)
    check_module(d, rng.standard_normal((8, 9)), rng, before_forward=lambda: d.manual_seed(7))
    assert (d._mask == 0).any() and (d._mask != 0).any()


def test_flatten():
    rng = np.random.default_rng(5)
    check_module(nn.Sequential(nn.Flatten(), nn.Linear(12, 3, generator=rng)), rng.standard_normal((4, 3, 2, 2)), rng)


def test_sequential_mlp():
    rng = np.random.default_rng(6)
    m = nn.Sequential(nn.Linear(5, 8, generator=rng), nn.Tanh(), nn.Linear(8, 6, generator=rng), nn.Sigmoid(),
                      nn.Linear(6, 3, generator=rng))
    check_module(m, rng.standard_normal((4, 5)), rng)


def test_residual():
    rng = np.random.default_rng(7)
    block = nn.Sequential(nn.Linear(6, 10, generator=rng), nn.Tanh(), nn.Linear(10, 6, generator=rng))
    m = nn.Sequential(nn.Residual(block), nn.Residual(nn.Linear(6, 6, activation="sigmoid", generator=rng)))
    check_module(m, rng.standard_normal((5, 6)), rng)


def test_gradients_accumulate_until_zero_grad():
    rng = np.random.default_rng(8)
    m = nn.Sequential(nn.Linear(4, 5, generator=rng), nn.ReLU(), nn.Linear(5, 2, generator=rng)).double()
    x, r = rng.standard_normal((3, 4)), rng.standard_normal((3, 2))
    m(x)
    m.backward(r)
    once = {k: p.grad.copy() for k, p in m.named_parameters()}
    m(x)
    m.backward(r)
    for k, p in m.named_parameters():
        np.testing.assert_allclose(p.grad, 2 * once[k], rtol=1e-12, atol=1e-12)
    m.zero_grad()
    assert all(p.grad is None for p in m.parameters())


def _check_loss(loss, pred, target, rng):
    pred = np.array(pred, dtype=np.float64)
    value, grad = loss(pred, target)
    assert grad.shape == pred.shape

    def f():
        v, _ = loss(pred, target)
        return float(np.sum(v))

    idx = list(np.ndindex(*pred.shape))
    np.testing.assert_allclose(np.array([grad[i] for i in idx]), _numgrad(f, pred, idx), rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("smoothing", [0.0, 0.15])
def test_cross_entropy(reduction, weighted, smoothing):
    rng = np.random.default_rng(9)
    w = rng.uniform(0.2, 2.0, 5) if weighted else None
    loss = nn.CrossEntropyLoss(weight=w, label_smoothing=smoothing, reduction=reduction)
    _check_loss(loss, rng.standard_normal((6, 5)) * 3, rng.integers(0, 5, 6), rng)


def test_cross_entropy_probability_targets_and_ignore_index():
    rng = np.random.default_rng(10)
    t = rng.dirichlet(np.ones(4), 5)
    _check_loss(nn.CrossEntropyLoss(weight=[1, 2, 0.5, 1], label_smoothing=0.1), rng.standard_normal((5, 4)), t, rng)
    y = np.array([0, -100, 3, 2, -100])
    _check_loss(nn.CrossEntropyLoss(label_smoothing=0.1), rng.standard_normal((5, 4)), y, rng)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_mse(reduction):
    rng = np.random.default_rng(11)
    _check_loss(nn.MSELoss(reduction=reduction), rng.standard_normal((4, 3)), rng.standard_normal((4, 3)), rng)


def test_cross_entropy_is_stable_for_huge_logits():
    loss, grad = nn.CrossEntropyLoss()(np.array([[1e4, 0.0, -1e4], [0.0, 1e4, 0.0]], np.float32), np.array([0, 2]))
    assert np.isfinite(loss) and np.isfinite(grad).all()
    assert loss == pytest.approx(1e4 / 2, rel=1e-6)


def test_float32_forward_matches_float64():
    rng = np.random.default_rng(12)
    m = nn.Sequential(nn.Linear(10, 20, generator=rng), nn.ReLU(), nn.Linear(20, 3, generator=rng))
    x = rng.standard_normal((7, 10)).astype(np.float32)
    y32 = m(x)
    g32 = m.backward(np.ones_like(y32))
    m.double()
    y64 = m(x.astype(np.float64))
    g64 = m.backward(np.ones_like(y64))
    assert y32.dtype == np.float32 and y64.dtype == np.float64
    np.testing.assert_allclose(y32, y64, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(g32, g64, rtol=1e-4, atol=1e-5)
    assert fl.nn.Linear(2, 2).weight.dtype == np.float32
