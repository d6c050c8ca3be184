"""The fused cell phases (fusedlearn._C.rnn_cell) at every ISA against numpy, and the
errors bad inputs raise (layers and kernels)."""
import numpy as np
import pytest

import fusedlearn as fl
from fusedlearn import nn
from fusedlearn.functional import rnn as FR

B, H = 5, 21  # H not a multiple of the SIMD width: vector body and scalar tail
sig = lambda v: 1 / (1 + np.exp(-v))  # noqa: E731


def _r(rng, *shape):
    return rng.standard_normal(shape).astype(np.float32)


LENGTHS = np.array([3, 1, 2, 5, 2])  # with t = 1: rows 1 inactive
T_STEP = 1


@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("peep", [False, True])
def test_lstm_cell(isa, masked, peep):
    rng = np.random.default_rng(0)
    gates, cp, hp, dh, dc, dy = _r(rng, B, 4 * H), _r(rng, B, H), _r(rng, B, H), _r(rng, B, H), _r(rng, B, H), _r(rng, B, H)
    p = _r(rng, 3 * H) if peep else np.zeros(3 * H, np.float32)
    lengths = LENGTHS if masked else None
    act = np.ones(B, bool) if not masked else T_STEP < LENGTHS
    # reference forward
    a = gates.astype(np.float64)
    i = sig(a[:, :H] + p[:H] * cp)
    f = sig(a[:, H:2 * H] + p[H:2 * H] * cp)
    g = np.tanh(a[:, 2 * H:3 * H])
    c = f * cp + i * g
    o = sig(a[:, 3 * H:] + p[2 * H:] * c)
    h = o * np.tanh(c)
    G = gates.copy()
    c_out, h_out, y = np.empty((B, H), np.float32), np.empty((B, H), np.float32), np.empty((B, H), np.float32)
    arrays = dict(gates=G, c_prev=cp, h_prev=hp, c=c_out, h=h_out, y=y, peep=p if peep else None)
    FR.rnn_cell("lstm_fwd", arrays, B, H, t=T_STEP, lengths=lengths)
    tol = dict(atol=2e-6, rtol=0)
    np.testing.assert_allclose(c_out[act], c[act], **tol)
    np.testing.assert_allclose(h_out[act], h[act], **tol)
    np.testing.assert_allclose(y[act], h[act], **tol)
    np.testing.assert_allclose(G[act], np.concatenate([i, f, g, o], 1)[act], **tol)
    if masked:
        np.testing.assert_array_equal(c_out[~act], cp[~act])
        np.testing.assert_array_equal(h_out[~act], hp[~act])
        np.testing.assert_array_equal(y[~act], 0)
    # reference backward
    dht = dh + dy
    tc = np.tanh(c)
    do = dht * tc * o * (1 - o)
    dcc = dc + dht * o * (1 - tc ** 2) + p[2 * H:] * do
    df = dcc * cp * f * (1 - f)
    di = dcc * g * i * (1 - i)
    dg = dcc * i * (1 - g ** 2)
    dc_prev = dcc * f + p[:H] * di + p[H:2 * H] * df
    dG = np.concatenate([di, df, dg, do], 1) * act[:, None]
    dh_k, dc_k = dh.copy(), dc.copy()
    db = np.zeros(4 * H, np.float32)
    dp = np.zeros(3 * H, np.float32)
    arrays = dict(gates=G, c_prev=cp, c=c_out, dh=dh_k, dy=dy, dc=dc_k, peep=p if peep else None, db_ih=db,
                  dpeep=dp if peep else None)
    FR.rnn_cell("lstm_bwd", arrays, B, H, t=T_STEP, lengths=lengths)
    tol = dict(atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(G, dG, **tol)
    np.testing.assert_allclose(dc_k[act], dc_prev[act], **tol)
    np.testing.assert_array_equal(dh_k[act], 0)
    np.testing.assert_allclose(db, dG.sum(0), **tol)
    if peep:
        ref = np.concatenate([(cp * di * act[:, None]).sum(0), (cp * df * act[:, None]).sum(0),
                              (c * do * act[:, None]).sum(0)])
        np.testing.assert_allclose(dp, ref, **tol)
    if masked:  # inactive rows pass their state gradients through
        np.testing.assert_array_equal(dh_k[~act], dh[~act])
        np.testing.assert_array_equal(dc_k[~act], dc[~act])


@pytest.mark.parametrize("masked", [False, True])
def test_gru_cell_reset_after(isa, masked):
    rng = np.random.default_rng(1)
    gates, gh, hp, dh, dy = _r(rng, B, 3 * H), _r(rng, B, 3 * H), _r(rng, B, H), _r(rng, B, H), _r(rng, B, H)
    lengths = LENGTHS if masked else None
    act = np.ones(B, bool) if not masked else T_STEP < LENGTHS
    r = sig(gates[:, :H] + gh[:, :H])
    z = sig(gates[:, H:2 * H] + gh[:, H:2 * H])
    q = gh[:, 2 * H:]
    n = np.tanh(gates[:, 2 * H:] + r * q)
    h = (1 - z) * n + z * hp
    G, aux, h_out = gates.copy(), np.empty((B, H), np.float32), np.empty((B, H), np.float32)
    FR.rnn_cell("gru_fwd", dict(gates=G, gh=gh, h_prev=hp, aux=aux, h=h_out), B, H, t=T_STEP, lengths=lengths)
    tol = dict(atol=2e-6, rtol=0)
    np.testing.assert_allclose(h_out[act], h[act], **tol)
    np.testing.assert_allclose(aux[act], q[act], **tol)
    if masked:
        np.testing.assert_array_equal(h_out[~act], hp[~act])
    dht = dh + dy
    dn = dht * (1 - z) * (1 - n ** 2)
    dz = dht * (hp - n) * z * (1 - z)
    dq = dn * r
    dr = dn * q * r * (1 - r)
    dh_k, db_ih, db_hh = dh.copy(), np.zeros(3 * H, np.float32), np.zeros(3 * H, np.float32)
    FR.rnn_cell("gru_bwd", dict(gates=G, aux=aux, h_prev=hp, dh=dh_k, dy=dy, db_ih=db_ih, db_hh=db_hh), B, H,
                t=T_STEP, lengths=lengths)
    a = act[:, None]
    tol = dict(atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(G, np.concatenate([dr, dz, dn], 1) * a, **tol)
    np.testing.assert_allclose(aux, dq * a, **tol)
    np.testing.assert_allclose(dh_k, np.where(a, dht * z, dh), **tol)
    np.testing.assert_allclose(db_ih, (np.concatenate([dr, dz, dn], 1) * a).sum(0), **tol)
    np.testing.assert_allclose(db_hh, (np.concatenate([dr, dz, dq], 1) * a).sum(0), **tol)


def test_gru_cell_cho(isa):
    rng = np.random.default_rng(2)
    gates, hp, dh, u = _r(rng, B, 3 * H), _r(rng, B, H), _r(rng, B, H), _r(rng, B, H)
    G, rh, h_out = gates.copy(), np.empty((B, H), np.float32), np.empty((B, H), np.float32)
    FR.rnn_cell("cho_fwd1", dict(gates=G, aux=rh, h_prev=hp), B, H)
    r, z = sig(gates[:, :H]), sig(gates[:, H:2 * H])
    np.testing.assert_allclose(rh, r * hp, atol=2e-6)
    G[:, 2 * H:] += u  # stands for U_n (r h) + b_n
    FR.rnn_cell("cho_fwd2", dict(gates=G, h_prev=hp, h=h_out), B, H)
    n = np.tanh(gates[:, 2 * H:] + u)
    np.testing.assert_allclose(h_out, (1 - z) * n + z * hp, atol=2e-6)
    dh_k = dh.copy()
    FR.rnn_cell("cho_bwd1", dict(gates=G, h_prev=hp, dh=dh_k), B, H)
    dn = dh * (1 - z) * (1 - n ** 2)
    dz = dh * (hp - n) * z * (1 - z)
    np.testing.assert_allclose(G[:, H:], np.concatenate([dz, dn], 1), atol=1e-5, rtol=1e-5)
    drh = _r(rng, B, H)
    FR.rnn_cell("cho_bwd2", dict(gates=G, aux=drh, h_prev=hp, dh=dh_k), B, H)
    np.testing.assert_allclose(G[:, :H], drh * hp * r * (1 - r), atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(dh_k, dh * z + drh * r, atol=1e-5, rtol=1e-5)


def test_isas_agree_on_a_sequence():
    rng = np.random.default_rng(3)
    m = nn.LSTM(6, 19, num_layers=2, bidirectional=True, peephole=True, generator=0)
    x = _r(rng, 7, 3, 6)
    before = fl.get_isa()
    outs = []
    try:
        for name in fl._C.available_isas():
            fl.set_isa(name)
            outs.append(m(x)[0])
    finally:
        fl.set_isa(before)
    for o in outs[1:]:
        np.testing.assert_allclose(o, outs[0], atol=1e-5)


# ---- bad inputs -------------------------------------------------------------------------
@pytest.fixture
def lstm():
    return nn.LSTM(4, 3, num_layers=2, generator=0)


def test_wrong_input_size(lstm):
    with pytest.raises(ValueError, match=r"input.size\(-1\) must be equal to input_size. Expected 4, got 5"):
        lstm(np.zeros((2, 3, 5), np.float32))


def test_wrong_ndim(lstm):
    for shape in [(4,), (2, 3, 1, 4)]:  # 2-D is an unbatched sequence
        with pytest.raises(ValueError, match=r"expected a 3-D input .* or a 2-D unbatched one"):
            lstm(np.zeros(shape, np.float32))


def test_wrong_hx_shape(lstm):
    h = np.zeros((1, 3, 3), np.float32)
    with pytest.raises(ValueError, match=r"expected h_0 of shape \(2, 3, 3\), got \(1, 3, 3\)"):
        lstm(np.zeros((2, 3, 4), np.float32), (h, h))
    with pytest.raises(TypeError, match=r"hx must be a tuple \(h_0, c_0\)"):
        lstm(np.zeros((2, 3, 4), np.float32), np.zeros((2, 3, 3), np.float32))
    g = nn.GRU(4, 3)
    with pytest.raises(ValueError, match=r"expected h_0 of shape \(1, 3, 3\), got \(1, 2, 3\)"):
        g(np.zeros((2, 3, 4), np.float32), np.zeros((1, 2, 3), np.float32))


@pytest.mark.parametrize("lengths", [[1, 3, 2], [0, 1, 1], [-1, 2, 2]])
def test_bad_lengths(lstm, lengths):
    with pytest.raises(ValueError, match=r"every length must be in \[1, 2\]"):
        lstm(np.zeros((2, 3, 4), np.float32), lengths=np.array(lengths))


def test_lengths_shape_and_dtype(lstm):
    x = np.zeros((2, 3, 4), np.float32)
    with pytest.raises(ValueError, match=r"lengths must have shape \(3,\)"):
        lstm(x, lengths=np.array([1, 2]))
    with pytest.raises(TypeError, match=r"lengths must be an integer array"):
        lstm(x, lengths=np.array([1.0, 2.0, 2.0]))


def test_wrong_dtype(lstm):
    with pytest.raises(TypeError, match=r"input has dtype float64 but the layer's parameters are float32"):
        lstm(np.zeros((2, 3, 4)))
    with pytest.raises(TypeError, match=r"input must be a floating-point array"):
        lstm(np.zeros((2, 3, 4), np.int32))
    h = np.zeros((2, 3, 3))
    with pytest.raises(TypeError, match=r"h_0 has dtype float64 but the layer is float32"):
        lstm(np.zeros((2, 3, 4), np.float32), (h, h))


def test_backward_errors(lstm):
    with pytest.raises(RuntimeError, match=r"backward\(\) called without a forward\(\)"):
        lstm.backward(np.zeros((2, 3, 3), np.float32))
    lstm(np.zeros((2, 3, 4), np.float32))
    with pytest.raises(ValueError, match=r"grad_output has shape \(2, 3, 4\), the output had \(2, 3, 3\)"):
        lstm.backward(np.zeros((2, 3, 4), np.float32))
    lstm.backward(np.zeros((2, 3, 3), np.float32))
    with pytest.raises(RuntimeError, match=r"or twice for one forward"):
        lstm.backward(np.zeros((2, 3, 3), np.float32))


def test_kernel_checks_shapes_and_dtypes():
    x = np.zeros((2, 3, 4), np.float32)
    w_ih, w_hh = np.zeros((12, 4), np.float32), np.zeros((12, 3), np.float32)
    with pytest.raises(ValueError, match=r"w_ih: expected shape \(12, 4\), got \(12, 5\)"):
        FR.rnn_forward("lstm", x, np.zeros((12, 5), np.float32), w_hh)
    with pytest.raises(TypeError, match=r"w_hh is float64 but x is float32"):
        FR.rnn_forward("lstm", x, w_ih, w_hh.astype(np.float64))
    with pytest.raises(ValueError, match=r"cell: expected 'lstm', 'gru' or 'gru_cho', got 'rnn'"):
        FR.rnn_forward("rnn", x, w_ih, w_hh)
    with pytest.raises(ValueError, match=r"lengths\[0\] = 3: every length must be in \[1, T\] with T = 2"):
        FR.rnn_forward("lstm", x, w_ih, w_hh, lengths=np.array([3, 1, 1]))
    with pytest.raises(ValueError, match=r"y: columns \[2, 5\) do not fit its last dimension 4"):
        FR.rnn_forward("lstm", x, w_ih, w_hh, y=np.zeros((2, 3, 4), np.float32), y_offset=2)
    with pytest.raises(ValueError, match=r"peep: peephole weights exist only for the LSTM"):
        FR.rnn_forward("gru", x, np.zeros((9, 4), np.float32), np.zeros((9, 3), np.float32),
                       peep=np.zeros(9, np.float32))
    _, _, _, cache = FR.rnn_forward("lstm", x, w_ih, w_hh)
    FR.rnn_backward(cache)
    with pytest.raises(RuntimeError, match=r"already used by a backward pass"):
        FR.rnn_backward(cache)


def test_dropout_reproducible_and_training_only():
    x = np.random.default_rng(0).standard_normal((5, 2, 4)).astype(np.float32)
    a = nn.GRU(4, 6, num_layers=2, dropout=0.5, generator=7)
    b = nn.GRU(4, 6, num_layers=2, dropout=0.5, generator=7)
    ya, yb = a(x)[0], b(x)[0]
    np.testing.assert_array_equal(ya, yb)
    assert np.abs(a(x)[0] - ya).max() > 0  # a new mask each call
    a.eval()
    e1 = a(x)[0]
    c = nn.GRU(4, 6, num_layers=2, dropout=0.0, generator=7)
    np.testing.assert_allclose(e1, c(x)[0], atol=1e-6)


@pytest.mark.parametrize("kind", ["lstm", "gru", "gru_cho"])
def test_threaded_cell_matches_one_thread(kind):
    """B*H above the cell's parallel threshold, H not a multiple of the 16-column split."""
    rng = np.random.default_rng(4)
    T_, B_, I_, H_ = 3, 64, 5, 130
    if kind == "lstm":
        m = nn.LSTM(I_, H_, peephole=True, generator=1)
    else:
        m = nn.GRU(I_, H_, reset_after=kind == "gru", generator=1)
    x = _r(rng, T_, B_, I_)
    go = _r(rng, T_, B_, H_)
    lengths = rng.integers(1, T_ + 1, B_)
    (o1, _, g1, p1), (o2, _, g2, p2) = _at_one_and_two_threads(m, x, None, go, lengths)
    np.testing.assert_allclose(o2, o1, atol=1e-6)
    np.testing.assert_allclose(g2, g1, atol=1e-5)
    for a, b in zip(p2, p1):
        np.testing.assert_allclose(a, b, atol=1e-4, rtol=1e-5)


def _at_one_and_two_threads(m, x, hx, go, lengths):
    """(output, h_n, input gradient, parameter gradients) of a forward + backward at 1, then 2 threads."""
    before = fl.get_num_threads()
    res = []
    try:
        for n in (1, 2):
            fl.set_num_threads(n)
            m.zero_grad()
            out, hn = m(x, hx, lengths=lengths)
            gx = m.backward(go)
            hn = hn[0] if isinstance(hn, tuple) else hn
            res.append((out, hn, gx, [p.grad.copy() for p in m.parameters()]))
    finally:
        fl.set_num_threads(before)
    return res


TEAM_CASES = [  # (T, B, I, H, kw): the 2-thread sequence teams (rnn_kernels.cpp) against one thread
    (9, 60, 40, 300, dict(bidirectional=True)),  # column team: reverse direction in chunks of 4 steps
    (2, 250, 8, 48, dict()),                     # column team, B above the packed GEMM's rows
    (9, 7, 700, 64, dict(num_layers=2)),         # column team, I above KC: W_ih slices of several K blocks
    (9, 60, 40, 100, dict(bidirectional=True)),  # batch-row team (weights in L2), both directions
    (5, 19, 30, 100, dict()),                    # batch-row team, odd rows per thread
]


@pytest.mark.parametrize("kind", ["lstm", "gru"])
@pytest.mark.parametrize("case", TEAM_CASES, ids=["cols-bidir", "cols-b250", "cols-i700", "rows-bidir", "rows-odd"])
def test_sequence_team_matches_one_thread(kind, case):
    T_, B_, I_, H_, kw = case
    rng = np.random.default_rng(5)
    m = (nn.LSTM if kind == "lstm" else nn.GRU)(I_, H_, generator=2, **kw)
    d = 2 if kw.get("bidirectional") else 1
    L = kw.get("num_layers", 1) * d
    x, go = _r(rng, T_, B_, I_), _r(rng, T_, B_, d * H_)
    h0 = _r(rng, L, B_, H_)
    hx = (h0, _r(rng, L, B_, H_)) if kind == "lstm" else h0
    lengths = rng.integers(1, T_ + 1, B_)
    (o1, n1, g1, p1), (o2, n2, g2, p2) = _at_one_and_two_threads(m, x, hx, go, lengths)
    np.testing.assert_allclose(o2, o1, atol=1e-5)
    np.testing.assert_allclose(n2, n1, atol=1e-5)
    np.testing.assert_allclose(g2, g1, atol=1e-4)
    for a, b in zip(p2, p1):
        np.testing.assert_allclose(a, b, atol=1e-3, rtol=1e-4)
