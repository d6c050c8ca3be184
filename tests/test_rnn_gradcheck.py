"""Finite-difference gradient checks (float64) of nn.LSTM / nn.GRU, including what torch
lacks: peepholes, Cho's GRU (reset_after=False), residual stacking, dropout masks."""
import numpy as np
import pytest

from fusedlearn import nn
from test_nn_gradcheck import _numgrad, _sample

T, B, I, H = 4, 3, 3, 4


def _num(f, arr, idx):
    return _numgrad(f, arr, [idx])[0]


def check(m, lengths=None, with_hx=True, tol=1e-6):
    rng = np.random.default_rng(0)
    lstm = isinstance(m, nn.LSTM)
    D = 2 if m.bidirectional else 1
    L = m.num_layers
    x = rng.standard_normal((T, B, I))
    h0 = rng.standard_normal((D * L, B, H)) * 0.5
    c0 = rng.standard_normal((D * L, B, H)) * 0.5
    r = rng.standard_normal((T, B, D * H))
    rh = rng.standard_normal((D * L, B, H))
    rc = rng.standard_normal((D * L, B, H))
    state = None
    if m.dropout:
        state = m.get_rng_state()

    def fwd():
        if state is not None:
            m.set_rng_state(state)  # the same dropout masks every call
        hx = ((h0, c0) if lstm else h0) if with_hx else None
        out, hn = m(x, hx, lengths=lengths)
        if lstm:
            return float(np.sum(out * r) + np.sum(hn[0] * rh) + np.sum(hn[1] * rc))
        return float(np.sum(out * r) + np.sum(hn * rh))

    fwd()
    m.zero_grad()
    gx = m.backward(r, (rh, rc) if lstm else rh)
    for idx in _sample(x.shape, rng, 10):
        np.testing.assert_allclose(gx[idx], _num(fwd, x, idx), rtol=tol, atol=tol)
    for name, p in m.named_parameters():
        for idx in _sample(p.shape, rng, 10):
            np.testing.assert_allclose(p.grad[idx], _num(fwd, p.data, idx), rtol=tol, atol=tol, err_msg=name)
    if with_hx:
        gh = m.grad_hx[0] if lstm else m.grad_hx
        for idx in _sample(h0.shape, rng, 10):
            np.testing.assert_allclose(gh[idx], _num(fwd, h0, idx), rtol=tol, atol=tol, err_msg="h0")
        if lstm:
            for idx in _sample(c0.shape, rng, 10):
                np.testing.assert_allclose(m.grad_hx[1][idx], _num(fwd, c0, idx), rtol=tol, atol=tol, err_msg="c0")


LENGTHS = np.array([2, T, 1])


@pytest.mark.parametrize("kw", [dict(peephole=True), dict(peephole=True, num_layers=2, bidirectional=True),
                                dict(peephole=True, residual=True, num_layers=3, bias=False),
                                dict(num_layers=2, dropout=0.4)],
                         ids=["peephole", "peephole-2layer-bi", "peephole-residual", "dropout"])
@pytest.mark.parametrize("lengths", [None, LENGTHS], ids=["full", "lengths"])
def test_lstm_gradients(kw, lengths):
    check(nn.LSTM(I, H, dtype=np.float64, generator=1, **kw), lengths=lengths)


@pytest.mark.parametrize("reset_after", [True, False], ids=["torch", "cho"])
@pytest.mark.parametrize("kw", [dict(), dict(num_layers=2, bidirectional=True, residual=True)], ids=["1layer", "2layer-bi-res"])
@pytest.mark.parametrize("lengths", [None, LENGTHS], ids=["full", "lengths"])
def test_gru_gradients(reset_after, kw, lengths):
    check(nn.GRU(I, H, reset_after=reset_after, dtype=np.float64, generator=2, **kw), lengths=lengths)


def test_cho_gru_differs_from_torch_gru():
    a = nn.GRU(I, H, dtype=np.float64, generator=3)
    b = nn.GRU(I, H, reset_after=False, dtype=np.float64)
    b.load_state_dict(a.state_dict())
    x = np.random.default_rng(0).standard_normal((T, B, I))
    assert np.abs(a(x)[0] - b(x)[0]).max() > 1e-3


def test_cho_gru_equation():
    """One step of Cho's GRU against the equations written out in numpy."""
    m = nn.GRU(I, H, reset_after=False, dtype=np.float64, generator=4)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((1, B, I))
    h = rng.standard_normal((1, B, H))
    s = lambda v: 1 / (1 + np.exp(-v))  # noqa: E731
    W, U, bi, bh = m.weight_ih_l0.data, m.weight_hh_l0.data, m.bias_ih_l0.data, m.bias_hh_l0.data
    a = x[0] @ W.T + bi
    r = s(a[:, :H] + h[0] @ U[:H].T + bh[:H])
    z = s(a[:, H:2 * H] + h[0] @ U[H:2 * H].T + bh[H:2 * H])
    n = np.tanh(a[:, 2 * H:] + (r * h[0]) @ U[2 * H:].T + bh[2 * H:])
    ref = (1 - z) * n + z * h[0]
    out, hn = m(x, h)
    np.testing.assert_allclose(out[0], ref, atol=1e-12)
    np.testing.assert_allclose(hn[0], ref, atol=1e-12)


def test_lstm_peephole_equation():
    """One step of the peephole LSTM (Greff et al.) against numpy."""
    m = nn.LSTM(I, H, peephole=True, dtype=np.float64, generator=5)
    rng = np.random.default_rng(2)
    x, h, c = rng.standard_normal((1, B, I)), rng.standard_normal((1, B, H)), rng.standard_normal((1, B, H))
    s = lambda v: 1 / (1 + np.exp(-v))  # noqa: E731
    a = x[0] @ m.weight_ih_l0.data.T + m.bias_ih_l0.data + h[0] @ m.weight_hh_l0.data.T + m.bias_hh_l0.data
    i = s(a[:, :H] + m.weight_ci_l0.data * c[0])
    f = s(a[:, H:2 * H] + m.weight_cf_l0.data * c[0])
    g = np.tanh(a[:, 2 * H:3 * H])
    c1 = f * c[0] + i * g
    o = s(a[:, 3 * H:] + m.weight_co_l0.data * c1)
    out, (hn, cn) = m(x, (h, c))
    np.testing.assert_allclose(cn[0], c1, atol=1e-12)
    np.testing.assert_allclose(out[0], o * np.tanh(c1), atol=1e-12)
