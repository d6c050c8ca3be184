"""GRUSpectralConstraint (Kanai et al. 2017): bound, minimal change, estimates, counters, errors."""
import numpy as np
import pytest

import fusedlearn as fl

H = 24


def _sv(w):
    return np.linalg.svd(np.asarray(w, np.float64), compute_uv=False)


def _gru_weight(scale, dtype=np.float32, seed=0):
    rng = np.random.default_rng(seed)
    return fl.nn.Parameter((rng.standard_normal((3 * H, H)) * scale / np.sqrt(H)).astype(dtype))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("delta", [0.2, 0.5])
def test_projection_bounds_the_top_singular_value(dtype, delta):
    p = _gru_weight(4.0, dtype)
    before = p.data.copy()
    s_before = _sv(before[2 * H:])
    assert s_before[0] > 2.5
    con = fl.optim.GRUSpectralConstraint(p, delta=delta)
    assert con.step() == 1
    s_after = _sv(p.data[2 * H:])
    assert s_after[0] <= 2 - delta
    assert s_after[0] > 2 - delta - 1e-5  # clipped to the bound, not below it
    # values under the bound keep their size; the gate rows are not touched
    below = s_before < 2 - delta
    np.testing.assert_allclose(s_after[-below.sum():], s_before[below], rtol=1e-5)
    np.testing.assert_array_equal(p.data[:2 * H], before[:2 * H])
    assert con.projections == con.svds == con.checks == 1 and con.projection_rate == 1.0


def test_untouched_when_already_below():
    p = _gru_weight(0.8, np.float32, seed=1)
    before = p.data.copy()
    assert _sv(before[2 * H:])[0] < 1.8
    con = fl.optim.GRUSpectralConstraint(p, delta=0.2)
    assert con.step() == 0
    np.testing.assert_array_equal(p.data, before)
    assert con.projections == 0 and con.svds == 1  # the first check is an SVD
    con.step()  # nothing moved: the Weyl bound certifies it without any computation
    assert con.certified_skips == 1 and con.svds == 1 and con.estimates == 0
    np.testing.assert_array_equal(p.data, before)


def test_bound_holds_along_a_training_like_walk_and_estimates_track_svd():
    rng = np.random.default_rng(2)
    p = _gru_weight(1.6, np.float64, seed=2)
    con = fl.optim.GRUSpectralConstraint(p, delta=0.2, margin=0.05)
    drift = rng.standard_normal((3 * H, H)) * 0.02
    for step in range(150):
        if step < 60:
            p.data += drift + rng.standard_normal(p.shape) * 0.004  # a steady pull upward plus noise
        else:
            p.data *= 0.995  # then a slow decay: the cheap stages take over
            p.data += rng.standard_normal(p.shape) * 0.001
        skips = con.certified_skips
        con.step()
        s = _sv(p.data[2 * H:])[0]
        assert s <= 1.8 + 1e-12, step
        if con.certified_skips > skips:  # nothing computed: last_sigma is an older estimate
            continue
        est = con.last_sigma["param(72, 24)"]
        assert est <= s + 1e-9  # the power estimate never exceeds the truth ...
        if step > 5:
            assert est > s * 0.97  # ... and tracks it closely with the warm start
    assert con.projections > 10 and con.estimates > 10 and con.certified_skips > 10
    assert con.svds < con.checks  # the cheap stages avoided some SVDs
    st = con.stats()
    # every check after the first is a certified skip or an estimate, and an SVD follows an estimate
    assert st["checks"] == 150 == 1 + st["certified_skips"] + st["estimates"]
    assert st["projections"] <= st["svds"] <= 1 + st["estimates"]


def test_power_iteration_estimate_vs_svd_after_warm_start():
    p = _gru_weight(1.0, np.float64, seed=3)
    con = fl.optim.GRUSpectralConstraint(p, delta=0.2, power_iters=3, margin=None)
    con.step()  # SVD: exact vector
    rng = np.random.default_rng(3)
    t = con.targets[0]
    for _ in range(20):
        p.data[2 * H:] += rng.standard_normal((H, H)) * 1e-3
        s_est = con._power(t, p.data[2 * H:].astype(np.float64))
        s_true = _sv(p.data[2 * H:])[0]
        assert s_true * (1 - 1e-3) <= s_est <= s_true * (1 + 1e-12)


def test_torch_gru_module_all_layers_and_directions():
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    gru = torch.nn.GRU(5, H, num_layers=2, bidirectional=True)
    with torch.no_grad():
        for name, w in gru.named_parameters():
            if name.startswith("weight_hh"):
                w.mul_(20.0)
    gates = {n: w.detach().numpy()[:2 * H].copy() for n, w in gru.named_parameters() if n.startswith("weight_hh")}
    con = fl.optim.GRUSpectralConstraint(gru, delta=0.3)
    assert sorted(t.name for t in con.targets) == sorted(gates)
    assert con.step() == 4
    for n, w in gru.named_parameters():
        if n.startswith("weight_hh"):
            assert _sv(w.detach().numpy()[2 * H:])[0] <= 1.7  # changed in place in the torch tensor
            np.testing.assert_array_equal(w.detach().numpy()[:2 * H], gates[n])


def test_jacobian_at_zero_is_half_identity_plus_quarter_candidate_matrix():
    """Which block is constrained: at h = 0 with zero biases and no input, one GRU step has
    the Jacobian I/2 + W_hn/4 (torch's reset-after convention), so rows 2H:3H are the ones."""
    torch = pytest.importorskip("torch")
    torch.manual_seed(1)
    cell = torch.nn.GRUCell(3, 6).double()
    with torch.no_grad():
        cell.bias_ih.zero_()
        cell.bias_hh.zero_()
    x = torch.zeros(1, 3, dtype=torch.float64)
    jac = torch.autograd.functional.jacobian(lambda h: cell(x, h[None])[0], torch.zeros(6, dtype=torch.float64))
    w_hn = cell.weight_hh.detach()[12:18]
    np.testing.assert_allclose(jac.numpy(), 0.5 * np.eye(6) + 0.25 * w_hn.numpy(), atol=1e-12)


def test_attach_runs_after_each_optimizer_step():
    p = _gru_weight(1.0, np.float32, seed=4)
    opt = fl.optim.SGD([p], lr=1.0)
    con = fl.optim.GRUSpectralConstraint([p], delta=0.2, optimizer=opt)
    p.grad = -np.ones_like(p.data) * 0.5  # a step that pushes the spectrum far out
    opt.step()
    assert con.checks == 1 and con.projections == 1
    assert _sv(p.data[2 * H:])[0] <= 1.8


def test_square_matrix_and_bad_inputs():
    w = np.diag(np.array([3.0, 1.0, 0.5]))
    con = fl.optim.GRUSpectralConstraint(w, delta=0.2)
    con.step()
    np.testing.assert_allclose(np.diag(w), [1.8, 1.0, 0.5], rtol=1e-12)
    with pytest.raises(ValueError, match=r"delta must be in \[0, 2\)"):
        fl.optim.GRUSpectralConstraint(w, delta=2.0)
    with pytest.raises(ValueError, match="power_iters must be an integer >= 1"):
        fl.optim.GRUSpectralConstraint(w, power_iters=0)
    with pytest.raises(ValueError, match="margin must be >= 0"):
        fl.optim.GRUSpectralConstraint(w, margin=-0.1)
    with pytest.raises(ValueError, match=r"GRU weight_hh \[3H, H\].*got shape \(5, 3\)"):
        fl.optim.GRUSpectralConstraint(np.zeros((5, 3)))
    with pytest.raises(TypeError, match="expected GRU modules or 2-D parameters"):
        fl.optim.GRUSpectralConstraint(["weight"])
    with pytest.raises(ValueError, match="found no GRU layer"):
        fl.optim.GRUSpectralConstraint(fl.nn.Linear(3, 3))
