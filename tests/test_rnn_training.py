"""BPTT and truncated BPTT (train/bptt.py), the SequenceModel container.

The machinery is tested with a numpy Elman RNN (tests/rnn_double.py, float64) so that
gradients can be compared exactly, and with fl.nn.GRU / LSTM where those exist.
"""
import copy
import os
import subprocess
import sys

import numpy as np
import pytest

import fusedlearn as fl
from rnn_double import TanhRNN
from test_nn_gradcheck import _numgrad

V, E, H, B = 6, 3, 5, 2


def _lm(seed=0, rnn=None):
    rnn = TanhRNN(E, H, seed=seed) if rnn is None else rnn
    emb = fl.nn.Embedding(V, E, dtype=np.float64, generator=seed)
    head = fl.nn.Linear(H, V, dtype=np.float64, generator=seed + 1)
    return fl.nn.SequenceModel(rnn, head, emb)


def _stream(T, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, V, size=(T, B))
    y = np.roll(x, -1, axis=0)
    return x, y


def _grads(model):
    return {n: p.grad.copy() for n, p in model.named_parameters()}


def _reference_grads(model, x, y, h0, w0, s, e):
    """Gradient of the loss of steps [s, e) back-propagated through [w0, e) from state h0."""
    m = copy.deepcopy(model)
    m.zero_grad()
    out, _ = m(x[w0:e], h0)
    _, g = fl.nn.SequenceCrossEntropyLoss()(out[s - w0:], y[s:e])
    full = np.zeros_like(out)
    full[s - w0:] = g
    m.backward(full)
    return _grads(m)


def _states(model, x):
    """h_t for t = 0..T from a zero state (constant weights), via single-step calls."""
    m = copy.deepcopy(model)
    hs = [np.zeros((1, B, H))]
    h = None
    for t in range(x.shape[0]):
        _, h = m(x[t:t + 1], h)
        hs.append(h)
    return hs


def test_tbptt_with_k1_k2_T_equals_full_bptt():
    x, y = _stream(9)
    loss = fl.nn.SequenceCrossEntropyLoss()
    a = _lm()
    b = copy.deepcopy(a)
    opt_a = fl.optim.SGD(a.parameters(), lr=0.5)
    opt_b = fl.optim.SGD(b.parameters(), lr=0.5)
    r = fl.train.bptt_step(a, loss, opt_a, x, y)
    hist = fl.train.train_tbptt(b, loss, opt_b, x, y, k1=9, k2=9, progress=False)
    assert hist["updates"] == 1 and hist["loss"][0] == pytest.approx(r["loss"], rel=1e-14)
    for (na, pa), (nb, pb) in zip(a.named_parameters(), b.named_parameters()):
        assert na == nb
        np.testing.assert_allclose(pa.grad, pb.grad, rtol=1e-13, atol=1e-15)
        np.testing.assert_allclose(pa.data, pb.data, rtol=1e-13, atol=1e-15)
    assert any(np.abs(pa.grad).max() > 0 for pa in a.parameters())


def _run_capture(model, x, y, k1, k2, lr=0.0):
    seen = []

    def cb(info):
        seen.append({**info, "grads": _grads(model)})

    opt = fl.optim.SGD(model.parameters(), lr=lr)
    hist = fl.train.train_tbptt(model, fl.nn.SequenceCrossEntropyLoss(), opt, x, y, k1=k1, k2=k2,
                                progress=False, on_update=cb)
    return hist, seen


def test_tbptt_carries_state_without_gradient():
    x, y = _stream(10, seed=1)
    model = _lm(seed=1)
    hist, seen = _run_capture(model, x, y, k1=5, k2=5)
    assert [(u["start"], u["end"], u["window"]) for u in seen] == [(0, 5, (0, 5)), (5, 10, (5, 10))]
    # the state entering chunk 2 is the final state of chunk 1, and the true h_5
    np.testing.assert_array_equal(seen[1]["state_in"], seen[0]["state_out"])
    hs = _states(model, x)
    np.testing.assert_allclose(seen[0]["state_out"], hs[5], rtol=1e-12)
    # chunk 2's gradient is that of chunk 2 alone from the constant state h_5 ...
    ref = _reference_grads(model, x, y, hs[5], 5, 5, 10)
    for n, g in seen[1]["grads"].items():
        np.testing.assert_allclose(g, ref[n], rtol=1e-11, atol=1e-14, err_msg=n)
    # ... and not the full-BPTT gradient of the same losses, which also flows into chunk 1.
    full = _reference_grads(model, x, y, None, 0, 5, 10)
    assert not np.allclose(full["rnn.weight_hh_l0"], ref["rnn.weight_hh_l0"], rtol=1e-6)
    assert hist["epoch_loss"][0] == pytest.approx(np.mean(hist["loss"]), rel=1e-12)


@pytest.mark.parametrize("k1,k2", [(3, 5), (2, 7), (5, 2), (4, 4)])
def test_tbptt_k1_k2_against_reference(k1, k2):
    T = 12
    x, y = _stream(T, seed=2)
    model = _lm(seed=2)
    hs = _states(model, x)
    hist, seen = _run_capture(model, x, y, k1=k1, k2=k2)
    assert hist["updates"] == -(-T // k1)
    s = 0
    for u in seen:
        e = min(s + k1, T)
        w0 = max(0, e - k2)
        assert (u["start"], u["end"], u["window"]) == (s, e, (w0, e))
        if u["state_in"] is None:  # the zero initial state
            assert w0 == 0
        else:
            np.testing.assert_allclose(u["state_in"], hs[w0], rtol=1e-11, atol=1e-14)
        lo = max(s, w0)
        ref = _reference_grads(model, x, y, hs[w0] if w0 else None, w0, lo, e)
        for n, g in u["grads"].items():
            np.testing.assert_allclose(g, ref[n], rtol=1e-10, atol=1e-13, err_msg=f"{n} at update {s}")
        s = e
    # the epoch loss is the mean per-step loss over every step of the stream
    out, _ = copy.deepcopy(model)(x)
    per = fl.nn.SequenceCrossEntropyLoss(reduction="none")(out, y)[0].mean(axis=1)
    assert hist["epoch_loss"][0] == pytest.approx(per.mean(), rel=1e-10)


def test_clipping_constraint_and_divergence():
    x, y = _stream(12, seed=3)
    model = _lm(seed=3)
    opt = fl.optim.SGD(model.parameters(), lr=0.1)

    class Count:
        calls = 0

        def step(self):
            Count.calls += 1

    hist = fl.train.train_tbptt(model, fl.nn.SequenceCrossEntropyLoss(), opt, x, y, k1=4, epochs=2,
                                clip_norm=1e-3, constraint=Count(), progress=False)
    assert Count.calls == hist["updates"] == 6 and len(hist["epoch_loss"]) == 2
    assert min(hist["grad_norm"]) > 1e-3  # reported before clipping
    total = np.sqrt(sum(float((p.grad ** 2).sum()) for p in model.parameters()))
    assert total == pytest.approx(1e-3, rel=1e-5)  # clipped in place
    before = {n: p.data.copy() for n, p in model.named_parameters()}
    hist = fl.train.train_tbptt(model, fl.nn.SequenceCrossEntropyLoss(), opt, x, y, k1=4, epochs=3,
                                diverge_above=0.0, progress=False)
    assert hist["diverged"] and hist["diverged_at"] == 0 and hist["updates"] == 1
    for n, p in model.named_parameters():
        np.testing.assert_array_equal(p.data, before[n])  # the diverged step is not taken


def test_fit_sequences_adding_problem_learns():
    rnn = TanhRNN(2, 16, seed=4)
    head = fl.nn.Linear(16, 1, dtype=np.float64, generator=4)
    model = fl.nn.SequenceModel(rnn, head, return_sequences=False)
    mse = fl.nn.MSELoss()
    rng = np.random.default_rng(0)

    def batches():
        while True:
            xb, yb = fl.data.adding_problem(32, seq_len=6, seed=rng, dtype=np.float64)
            yield xb, yb[:, None]

    opt = fl.optim.Adam(model.parameters(), lr=0.02)
    hist = fl.train.fit_sequences(model, mse, opt, batches(), steps=400, progress=False)
    assert hist["updates"] == 400 and not hist["diverged"]
    assert np.mean(hist["loss"][-50:]) < 0.1 / 6  # 10x below the constant predictor's 1/6


def test_sequence_model_backward_matches_finite_differences():
    model = fl.nn.SequenceModel(TanhRNN(3, 4, seed=5), fl.nn.Linear(4, 2, dtype=np.float64, generator=5))
    x = np.random.default_rng(6).standard_normal((4, 2, 3))
    h0 = np.random.default_rng(7).standard_normal((1, 2, 4))
    c = np.random.default_rng(8).standard_normal((4, 2, 2))
    model(x, h0)
    gx = model.backward(c)
    every = lambda a: list(np.ndindex(a.shape))  # noqa: E731
    objective = lambda: np.sum(model(x, h0)[0] * c)  # noqa: E731
    np.testing.assert_allclose(gx, _numgrad(objective, x, every(x)).reshape(x.shape), atol=1e-8)
    model(x, h0)
    model.backward(c)
    np.testing.assert_allclose(model.grad_state, _numgrad(objective, h0, every(h0)).reshape(h0.shape), atol=1e-8)


def test_bad_inputs():
    x, y = _stream(8)
    model = _lm()
    opt = fl.optim.SGD(model.parameters(), lr=0.1)
    loss = fl.nn.SequenceCrossEntropyLoss()
    with pytest.raises(ValueError, match="k1 and k2 must be >= 1"):
        fl.train.train_tbptt(model, loss, opt, x, y, k1=0)
    with pytest.raises(TypeError, match="k1 must be an integer"):
        fl.train.train_tbptt(model, loss, opt, x, y, k1=2.0)
    with pytest.raises(ValueError, match="must share the time axis"):
        fl.train.train_tbptt(model, loss, opt, x, y[:5], k1=2)
    with pytest.raises(ValueError, match="clip_norm must be > 0"):
        fl.train.train_tbptt(model, loss, opt, x, y, k1=2, clip_norm=0)
    with pytest.raises(TypeError, match=r"each batch must be \(x, y\)"):
        fl.train.fit_sequences(model, loss, opt, [x], progress=False)
    with pytest.raises(TypeError, match="rnn must be a fusedlearn Module"):
        fl.nn.SequenceModel(object())
    with pytest.raises(RuntimeError, match="before forward"):
        _lm().backward(np.zeros((2, B, V)))


# ---- with the fused layers ----------------------------------------------------------------------

@pytest.mark.parametrize("cell", ["GRU", "LSTM"])
def test_tbptt_with_fused_layers(cell):
    layer = getattr(fl.nn, cell)(E, H, num_layers=2, generator=7)
    model = _lm(seed=7, rnn=layer)
    model.float()
    x, y = _stream(12, seed=7)
    loss = fl.nn.SequenceCrossEntropyLoss()
    # k1 = k2 = T is full BPTT (same weights after the update)
    a, b = copy.deepcopy(model), copy.deepcopy(model)
    fl.train.bptt_step(a, loss, fl.optim.SGD(a.parameters(), lr=0.5), x, y)
    fl.train.train_tbptt(b, loss, fl.optim.SGD(b.parameters(), lr=0.5), x, y, k1=12, k2=12, progress=False)
    for pa, pb in zip(a.parameters(), b.parameters()):
        np.testing.assert_array_equal(pa.data, pb.data)
    # the carried state is the layer's state after the first chunk, (h, c) for the LSTM
    c = copy.deepcopy(model)
    _, ref_state = copy.deepcopy(model)(x[:4])
    hist, seen = _run_capture(c, x, y, k1=4, k2=4)
    first, second = seen[0]["state_out"], seen[1]["state_in"]
    flat = (lambda s: s if isinstance(s, tuple) else (s,))
    assert len(flat(second)) == (2 if cell == "LSTM" else 1)
    for s1, s2, r in zip(flat(first), flat(second), flat(ref_state)):
        assert s1.shape == (2, B, H)
        np.testing.assert_array_equal(s1, s2)
        np.testing.assert_allclose(s1, r, rtol=1e-6, atol=1e-7)
    assert hist["updates"] == 3 and np.isfinite(hist["epoch_loss"][0])


def test_constraint_on_fused_gru_both_conventions():
    for reset_after in (True, False):
        gru = fl.nn.GRU(3, H, num_layers=2, bidirectional=True, reset_after=reset_after, generator=8)
        for name, p in gru.named_parameters():
            if name.startswith("weight_hh"):
                p.data *= 40.0
        con = fl.optim.GRUSpectralConstraint(gru, delta=0.2)
        assert len(con.targets) == 4 and con.step() == 4
        for s in con.sigma_max().values():
            assert s <= 1.8


def test_gru_explosion_example_quick(tmp_path):
    out = tmp_path / "r.md"
    script = os.path.join(os.path.dirname(__file__), "..", "examples", "gru_explosion.py")
    if not os.path.isfile("/usr/share/common-licenses/GPL-3"):
        pytest.skip("the example's text (Debian base-files) is not installed")
    env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(os.path.abspath(fl.__file__))))
    r = subprocess.run([sys.executable, script, "--quick", "--jobs", "1", "--out", str(out)],
                       capture_output=True, text=True, timeout=120, env=env)
    assert r.returncode == 0, r.stderr
    text = out.read_text()
    assert "| spectral | 1 |" in text and "| none | 30 |" in text
    assert (tmp_path / "r.png").stat().st_size > 1000
