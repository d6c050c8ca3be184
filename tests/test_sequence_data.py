"""Sequence data generators: Mackey-Glass, adding problem, copy task, character text."""
import numpy as np
import pytest

import fusedlearn as fl


def test_mackey_glass_exact_before_the_delay_acts():
    # For t < tau the delayed term is x(t - tau) = 0, so dx/dt = -b x and x = x0 exp(-b t).
    x = fl.data.mackey_glass(17)
    np.testing.assert_allclose(x, 1.2 * np.exp(-0.1 * np.arange(17)), rtol=1e-9)
    x = fl.data.mackey_glass(10, x0=0.5, b=0.2, sample_step=0.5)
    np.testing.assert_allclose(x, 0.5 * np.exp(-0.2 * 0.5 * np.arange(10)), rtol=1e-8)  # RK4 error ~1e-9


def test_mackey_glass_attractor_statistics_and_convergence():
    x = fl.data.mackey_glass(3000, discard=500)
    # The tau = 17 attractor: values in about [0.4, 1.35], mean about 0.92, std about 0.23.
    assert 0.38 < x.min() < 0.48 and 1.25 < x.max() < 1.36
    assert 0.88 < x.mean() < 0.96 and 0.2 < x.std() < 0.26
    # The history jumps from 0 to x0 at t = 0, so past t = tau the delayed term is discontinuous and
    # the scheme is first-order there: halving dt about halves the error (over a short horizon;
    # chaos amplifies errors later on).
    coarse, mid, fine = (fl.data.mackey_glass(60, dt=d) for d in (0.1, 0.05, 0.0125))
    e1, e2 = np.abs(coarse - fine).max(), np.abs(mid - fine).max()
    assert e1 < 1e-3 and 1.5 < e1 / e2 < 3.5
    # Periodic regime for a short delay (tau = 5 has a limit cycle, no chaos): bounded, not constant.
    p = fl.data.mackey_glass(400, tau=5.0, discard=500)
    assert 0.3 < p.min() < p.max() < 1.5


def test_mackey_glass_bad_inputs():
    with pytest.raises(ValueError, match="whole multiple of dt"):
        fl.data.mackey_glass(10, sample_step=0.25)
    with pytest.raises(ValueError, match="tau must be a positive"):
        fl.data.mackey_glass(10, tau=-1)
    with pytest.raises(TypeError, match="n must be an integer"):
        fl.data.mackey_glass(10.0)
    with pytest.raises(ValueError, match="n must be >= 1"):
        fl.data.mackey_glass(0)


def test_adding_problem_targets():
    x, y = fl.data.adding_problem(50, seq_len=20, seed=0)
    assert x.shape == (20, 50, 2) and y.shape == (50,) and x.dtype == np.float32
    marks = x[:, :, 1]
    np.testing.assert_array_equal(marks.sum(axis=0), 2)
    assert np.all(marks[:10].sum(axis=0) == 1) and np.all(marks[10:].sum(axis=0) == 1)
    np.testing.assert_allclose(y, (x[:, :, 0] * marks).sum(axis=0), rtol=1e-6)
    assert np.all((x[:, :, 0] >= 0) & (x[:, :, 0] < 1))
    xb, yb = fl.data.adding_problem(50, seq_len=20, seed=0, batch_first=True)
    np.testing.assert_array_equal(xb, x.transpose(1, 0, 2))
    np.testing.assert_array_equal(yb, y)
    x2, _ = fl.data.adding_problem(50, seq_len=20, seed=1)
    assert not np.array_equal(x, x2)
    with pytest.raises(ValueError, match="seq_len must be >= 2"):
        fl.data.adding_problem(5, seq_len=1)


def test_copy_task_layout():
    x, y = fl.data.copy_task(6, seq_len=4, delay=7, n_symbols=5, seed=3)
    assert x.shape == y.shape == (7 + 8, 6) and x.dtype == np.int64
    np.testing.assert_array_equal(y[-4:], x[:4])  # the symbols come back at the end
    assert np.all((x[:4] >= 1) & (x[:4] <= 5))
    assert np.all(x[4 + 6] == 6)  # delimiter after delay - 1 blanks
    assert np.all(x[4:4 + 6] == 0) and np.all(x[-4:] == 0)
    assert np.all(y[:-4] == 0)
    xb, yb = fl.data.copy_task(6, seq_len=4, delay=7, n_symbols=5, seed=3, batch_first=True)
    np.testing.assert_array_equal(xb, x.T)
    with pytest.raises(ValueError, match="delay must be >= 1"):
        fl.data.copy_task(2, delay=0)


def test_char_text_and_batchify(tmp_path):
    p = tmp_path / "t.txt"
    p.write_text("hello world\nhé", encoding="utf-8")
    codes, vocab = fl.data.char_text(p)
    assert "".join(vocab[i] for i in codes) == "hello world\nhé"
    assert vocab == sorted(set("hello world\nhé")) and codes.dtype == np.int64
    codes2, _ = fl.data.char_text(p, vocab=vocab[::-1])
    np.testing.assert_array_equal(codes2, len(vocab) - 1 - codes)
    with pytest.raises(ValueError, match="not in vocab"):
        fl.data.char_text(p, vocab=list("helo"))
    s = fl.data.batchify(np.arange(23), 4)
    assert s.shape == (5, 4)
    np.testing.assert_array_equal(s[:, 1], np.arange(5, 10))
    with pytest.raises(ValueError, match="must be 1-D"):
        fl.data.batchify(np.zeros((2, 2)), 1)
    with pytest.raises(ValueError, match="cannot fill"):
        fl.data.batchify(np.arange(3), 4)
    with pytest.raises(TypeError, match="path must be a path"):
        fl.data.char_text(3)


def test_mackey_glass_integrator_independent_facts():
    # x(t < 0) = 0, x(0) = 1.2: on the whole of 0 <= t < 17 (every RK4 grid point, dt = 0.1) the
    # delayed term vanishes and x(t) = 1.2 exp(-0.1 t) holds to the integrator's (tiny) error.
    t = np.arange(170) * 0.1
    x = fl.data.mackey_glass(170, sample_step=0.1)
    np.testing.assert_allclose(x, 1.2 * np.exp(-0.1 * t), rtol=1e-9)
    # After the transient, the tau = 17 attractor's published figures: mean 0.930, std 0.226,
    # range about 0.41-1.32 (these hold for any accurate integrator; measured 0.9304, 0.2260,
    # 0.4175-1.3192 over 4000 samples).
    x = fl.data.mackey_glass(4000, discard=1000)
    assert abs(x.mean() - 0.930) < 0.005
    assert abs(x.std() - 0.226) < 0.004
    assert 0.40 < x.min() < 0.43 and 1.30 < x.max() < 1.34
