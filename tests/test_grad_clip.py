"""Gradient clipping, non-finite detection and skipped optimizer steps."""
import math

import numpy as np
import pytest

import fusedlearn.optim as fo
from fusedlearn.nn import Parameter

SHAPES = [(3, 4), (5,), (2, 2, 2), (1,)]


def torch_params(torch, scale=1.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    ps = []
    for s in SHAPES:
        p = torch.nn.Parameter(torch.randn(s, generator=g))
        p.grad = torch.randn(s, generator=g) * scale
        ps.append(p)
    return ps


def np_grads(dtype=np.float32, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(s).astype(dtype) for s in SHAPES]


def global_norm(arrays, p):
    flat = np.concatenate([np.asarray(a, np.float64).ravel() for a in arrays])
    return float(np.linalg.norm(flat, ord=p))


@pytest.mark.parametrize("norm_type", [2.0, math.inf, 1.0, 3.0])
@pytest.mark.parametrize("max_norm", [0.5, 1e3])
def test_clip_grad_norm_matches_torch(norm_type, max_norm):
    torch = pytest.importorskip("torch")
    ours, theirs = torch_params(torch, 2.0), torch_params(torch, 2.0)
    before = [p.grad.clone() for p in ours]
    n_ours = fo.clip_grad_norm_(ours, max_norm, norm_type=norm_type)
    n_theirs = torch.nn.utils.clip_grad_norm_(theirs, max_norm, norm_type=norm_type)
    assert isinstance(n_ours, float)
    assert n_ours == pytest.approx(float(n_theirs), rel=1e-6)
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-6, atol=1e-7)
    clipped = max_norm < n_ours
    assert clipped == (max_norm == 0.5)  # the small max_norm does clip, the large one does not
    if clipped:
        assert global_norm([p.grad for p in ours], norm_type) == pytest.approx(max_norm, rel=1e-5)
    else:
        assert all(torch.equal(p.grad, b) for p, b in zip(ours, before))


@pytest.mark.parametrize("norm_type", [2.0, math.inf, 1.0])
def test_clip_grad_norm_numpy_inputs(norm_type):
    grads = np_grads(np.float32) + np_grads(np.float64, seed=1)  # two dtypes: two fused passes
    want = global_norm(grads, norm_type)
    expected = [g * (1.0 / (want + 1e-6)) for g in grads]
    assert fo.clip_grad_norm_(grads, 1.0, norm_type) == pytest.approx(want, rel=1e-6)
    for g, e in zip(grads, expected):
        np.testing.assert_allclose(g, e, rtol=1e-5)
    # a single array, fl Parameters and (array, grad) pairs
    a = np.full(4, 3.0)
    assert fo.clip_grad_norm_(a, 3.0, norm_type) == pytest.approx(global_norm([np.full(4, 3.0)], norm_type))
    assert np.all(a < 3.0)
    p = Parameter(np.zeros(4))
    p.grad = np.full(4, 2.0)
    w, g = np.zeros(2), np.full(2, 2.0)
    n = fo.clip_grad_norm_([p, (w, g), Parameter(np.zeros(2))], 1.0, norm_type)
    assert n == pytest.approx(global_norm([np.full(6, 2.0)], norm_type))
    assert global_norm([p.grad, g], norm_type) == pytest.approx(1.0, rel=1e-5)
    assert fo.clip_grad_norm_([], 1.0) == 0.0


def test_clip_grad_norm_nonfinite():
    torch = pytest.importorskip("torch")
    for bad in (float("nan"), float("inf")):
        ours, theirs = torch_params(torch), torch_params(torch)
        for ps in (ours, theirs):
            ps[1].grad[2] = bad
        before = [p.grad.clone() for p in ours]
        with pytest.raises(RuntimeError, match="non-finite"):
            fo.clip_grad_norm_(ours, 1.0, error_if_nonfinite=True)
        for p, b in zip(ours, before):
            torch.testing.assert_close(p.grad, b, equal_nan=True)
        with pytest.raises(RuntimeError):
            torch.nn.utils.clip_grad_norm_(theirs, 1.0, error_if_nonfinite=True)
        n = fo.clip_grad_norm_(ours, 1.0)
        t = torch.nn.utils.clip_grad_norm_(theirs, 1.0)
        assert (math.isnan(n) and math.isnan(float(t))) or n == float(t)
        for a, b in zip(ours, theirs):
            torch.testing.assert_close(a.grad, b.grad, equal_nan=True)


def test_clip_grad_value_matches_torch():
    torch = pytest.importorskip("torch")
    ours, theirs = torch_params(torch, 2.0), torch_params(torch, 2.0)
    fo.clip_grad_value_(ours, 0.7)
    torch.nn.utils.clip_grad_value_(theirs, 0.7)
    for a, b in zip(ours, theirs):
        assert torch.equal(a.grad, b.grad)
    assert max(float(p.grad.abs().max()) for p in ours) == pytest.approx(0.7)
    grads = np_grads()
    fo.clip_grad_value_(grads, 0.25)
    assert all(np.abs(g).max() <= np.float32(0.25) for g in grads)
    assert any(np.abs(g).max() == np.float32(0.25) for g in grads)


def test_found_inf():
    grads = np_grads()
    assert fo.found_inf(grads) is False
    grads[2][0, 1, 1] = np.inf
    assert fo.found_inf(grads) is True
    p = Parameter(np.zeros(3))
    p.grad = np.array([0.0, np.nan, 1.0])
    assert fo.found_inf([p]) is True
    assert fo.found_inf([Parameter(np.zeros(3))]) is False  # no gradient, nothing to find


def _adam_with_state():
    ps = [Parameter(np.ones(s, np.float32)) for s in SHAPES]
    opt = fo.Adam(ps, lr=0.1, skip_nonfinite=True)
    for p, g in zip(ps, np_grads()):
        p.grad = g
    opt.step()
    return ps, opt


def snapshot(ps, opt):
    return ([p.data.copy() for p in ps],
            [{k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in opt.state[p].items()} for p in ps])


def assert_unchanged(ps, opt, snap):
    datas, states = snap
    for p, d, s in zip(ps, datas, states):
        np.testing.assert_array_equal(p.data, d)
        assert set(opt.state[p]) == set(s)
        for k, v in s.items():
            np.testing.assert_array_equal(opt.state[p][k], v)


def test_skip_nonfinite_skips_whole_step():
    ps, opt = _adam_with_state()
    snap = snapshot(ps, opt)
    for p, g in zip(ps, np_grads(seed=3)):
        p.grad = g
    ps[3].grad[0] = np.nan  # one bad element anywhere skips every param
    opt.step()
    assert opt.skipped_steps == 1
    assert_unchanged(ps, opt, snap)
    assert opt.state[ps[0]]["step"] == 1.0
    ps[3].grad[0] = 0.5
    opt.step()
    assert opt.skipped_steps == 1
    assert opt.state[ps[0]]["step"] == 2.0
    assert not np.array_equal(ps[0].data, snap[0][0])


def test_without_skip_nonfinite_the_step_happens():
    p = Parameter(np.ones(3, np.float32))
    opt = fo.SGD([p], lr=0.1)
    p.grad = np.array([1.0, np.inf, 1.0], np.float32)
    opt.step()
    assert opt.skipped_steps == 0
    assert not np.isfinite(p.data[1]) and p.data[0] == np.float32(0.9)


def test_step_found_inf():
    ps, opt = _adam_with_state()
    snap = snapshot(ps, opt)
    for p, g in zip(ps, np_grads(seed=4)):
        p.grad = g
    opt.step(found_inf=True)
    opt.step(found_inf=np.array(1.0, np.float32))
    assert opt.skipped_steps == 2
    assert_unchanged(ps, opt, snap)
    opt.step(found_inf=False)
    assert opt.state[ps[0]]["step"] == 2.0


def test_step_found_inf_creates_no_state_torch():
    torch = pytest.importorskip("torch")
    ps = torch_params(torch)
    before = [p.detach().clone() for p in ps]
    opt = fo.AdamW(ps, lr=0.1)
    opt.step(found_inf=torch.tensor(True))
    assert len(opt.state) == 0 and opt.skipped_steps == 1
    assert all(torch.equal(p.detach(), b) for p, b in zip(ps, before))
    opt.step(found_inf=torch.tensor(0.0))
    assert float(opt.state[ps[0]]["step"]) == 1.0
