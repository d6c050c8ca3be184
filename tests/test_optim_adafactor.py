"""fusedlearn.optim.Adafactor against torch.optim.Adafactor: 1-D to 4-D params, every switch, each ISA."""
import copy

import numpy as np
import pytest

torch = pytest.importorskip("torch")
if not hasattr(torch.optim, "Adafactor"):
    pytest.skip("this torch has no torch.optim.Adafactor", allow_module_level=True)

import fusedlearn.functional as F  # noqa: E402
import fusedlearn.optim as fo  # noqa: E402

SHAPES = [(7,), (5, 9), (3, 4, 6), (2, 3, 5, 4), (1, 17), (33, 1)]

CONFIGS = [
    dict(),
    dict(lr=0.05),
    dict(lr=0.5),  # rho = 1/sqrt(t) for the first steps
    dict(weight_decay=0.1),
    dict(maximize=True),
    dict(eps=(1e-4, 1e-3)),  # eps1 binds (the estimate falls below eps1^2)
    dict(eps=(1e-30, 10.0)),  # eps2 binds: alpha = eps2 * rho
    dict(d=1.5),
    dict(d=1e6),  # no clipping
    dict(beta2_decay=-0.5),
    dict(beta2_decay=0.0),  # w = 1: the estimate is this step's g^2 alone
    dict(lr=0.02, beta2_decay=-0.6, eps=(1e-6, 1e-2), d=2.0, weight_decay=0.05, maximize=True),
]
IDS = [",".join(f"{k}={v}" for k, v in kw.items()) or "defaults" for kw in CONFIGS]


def make_params(dtype, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return [torch.nn.Parameter(torch.randn(s, generator=gen, dtype=dtype)) for s in SHAPES]


def set_grads(params, step):
    gen = torch.Generator().manual_seed(1000 + step)
    for p in params:
        # a gradient with a scale that varies by element, so the factors differ by row and column
        p.grad = torch.randn(p.shape, generator=gen, dtype=p.dtype) * (1 + p.detach().abs())


def run(opt, params, steps, start=0):
    for t in range(start, start + steps):
        set_grads(params, t)
        opt.step()


def pair(kw, dtype):
    pt = make_params(dtype)
    po = copy.deepcopy(pt)
    return po, fo.Adafactor(po, **kw), pt, torch.optim.Adafactor(pt, **kw)


def tol(dtype):
    return dict(rtol=1e-5, atol=1e-6) if dtype == torch.float32 else dict(rtol=1e-11, atol=1e-13)


def assert_close(po, pt, ours, theirs, dtype):
    for a, b in zip(po, pt):
        torch.testing.assert_close(a.detach(), b.detach(), **tol(dtype))
        sa, sb = ours.state[a], theirs.state[b]
        assert set(sa) == set(sb)
        assert float(sa["step"]) == float(sb["step"])
        for k in sb:
            if k != "step":
                assert tuple(sa[k].shape) == tuple(sb[k].shape), k
                torch.testing.assert_close(sa[k], sb[k], **tol(dtype))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("kw", CONFIGS, ids=IDS)
def test_matches_torch(kw, dtype, isa):
    po, ours, pt, theirs = pair(kw, dtype)
    run(ours, po, 6)
    run(theirs, pt, 6)
    assert_close(po, pt, ours, theirs, dtype)


def test_state_keys_and_shapes():
    po, ours, pt, theirs = pair({}, torch.float32)
    run(ours, po, 1)
    p1, p2, p3 = po[0], po[1], po[2]
    assert set(ours.state[p1]) == {"step", "variance"}
    assert set(ours.state[p2]) == {"step", "row_var", "col_var"}
    assert tuple(ours.state[p3]["row_var"].shape) == (3, 4, 1)
    assert tuple(ours.state[p3]["col_var"].shape) == (3, 1, 6)


def test_state_dict_torch_to_ours():
    kw = dict(lr=0.05, weight_decay=0.02)
    pt = make_params(torch.float32)
    theirs = torch.optim.Adafactor(pt, **kw)
    run(theirs, pt, 4)
    theirs.param_groups[0]["d"] = 1.5  # hyperparameters travel with the state dict
    po = copy.deepcopy(pt)
    ours = fo.Adafactor(po)
    ours.load_state_dict(theirs.state_dict())
    assert ours.param_groups[0]["d"] == 1.5 and ours.param_groups[0]["lr"] == 0.05
    run(ours, po, 5, start=4)
    run(theirs, pt, 5, start=4)
    assert_close(po, pt, ours, theirs, torch.float32)


def test_state_dict_ours_to_torch():
    po = make_params(torch.float64)
    ours = fo.Adafactor(po, maximize=True, eps=(1e-8, 1e-3))
    run(ours, po, 4)
    pt = copy.deepcopy(po)
    theirs = torch.optim.Adafactor(pt)
    theirs.load_state_dict(copy.deepcopy(ours.state_dict()))
    run(ours, po, 5, start=4)
    run(theirs, pt, 5, start=4)
    assert_close(po, pt, ours, theirs, torch.float64)


def test_load_rejects_wrong_factor_shape():
    pt = make_params(torch.float32)
    theirs = torch.optim.Adafactor(pt)
    run(theirs, pt, 1)
    sd = theirs.state_dict()
    sd["state"][1]["row_var"] = torch.zeros(5, 9)
    ours = fo.Adafactor(copy.deepcopy(pt))
    with pytest.raises(ValueError, match=r"loaded state 'row_var' of param 1 has shape \(5, 9\), expected \(5, 1\)"):
        ours.load_state_dict(sd)


def test_numpy_arrays(isa):
    rng = np.random.default_rng(3)
    p = rng.standard_normal((4, 6)).astype(np.float32)
    g = rng.standard_normal((4, 6)).astype(np.float32)
    r, c = np.zeros((4, 1), np.float32), np.zeros((1, 6), np.float32)
    pt = torch.nn.Parameter(torch.from_numpy(p.copy()))
    pt.grad = torch.from_numpy(g.copy())
    theirs = torch.optim.Adafactor([pt], lr=0.05)
    theirs.step()
    F.adafactor_(p, g, r, c, None, step=1, lr=0.05, eps1=float(np.finfo(np.float32).eps))
    np.testing.assert_allclose(p, pt.detach().numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(r, theirs.state[pt]["row_var"].numpy(), rtol=1e-5)


BAD_HYPER = [
    dict(lr=-1e-3),
    dict(beta2_decay=0.1),
    dict(eps=(-1e-3, 1e-3)),
    dict(eps=(None, -1.0)),
    dict(d=0.5),
    dict(weight_decay=-0.1),
]


@pytest.mark.parametrize("kw", BAD_HYPER, ids=[str(kw) for kw in BAD_HYPER])
def test_bad_hyperparameters_raise_as_torch(kw):
    with pytest.raises(ValueError) as theirs:
        torch.optim.Adafactor([torch.nn.Parameter(torch.zeros(2))], **kw)
    with pytest.raises(ValueError) as ours:
        fo.Adafactor([torch.nn.Parameter(torch.zeros(2))], **kw)
    assert str(ours.value) == str(theirs.value)


def test_functional_bad_inputs():
    p, g = np.zeros((3, 4), np.float32), np.ones((3, 4), np.float32)
    with pytest.raises(ValueError, match="row_var and col_var are required"):
        F.adafactor_(p, g, None, None, None, step=1, eps1=1e-7)
    with pytest.raises(ValueError, match="row_var must have"):
        F.adafactor_(p, g, np.zeros((4, 1), np.float32), np.zeros((1, 4), np.float32), None, step=1, eps1=1e-7)
    with pytest.raises(ValueError, match="variance is required"):
        F.adafactor_(np.zeros(3, np.float32), np.ones(3, np.float32), step=1, eps1=1e-7)
    with pytest.raises(ValueError, match="beta2_decay should be <= 0"):
        F.adafactor_(np.zeros(3, np.float32), np.ones(3, np.float32), None, None, np.zeros(3, np.float32),
                     step=1, eps1=1e-7, beta2_decay=0.5)
