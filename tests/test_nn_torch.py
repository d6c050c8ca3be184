"""Our layers and losses against torch.nn with copied weights; torch state dicts load."""
import numpy as np
import pytest

from fusedlearn import nn

torch = pytest.importorskip("torch")


def _t(a):
    return torch.tensor(np.asarray(a), dtype=torch.float64, requires_grad=True)


def _torch_mlp():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(6, 9), torch.nn.ReLU(), torch.nn.Linear(9, 7), torch.nn.Tanh(),
                               torch.nn.Dropout(0.5), torch.nn.Linear(7, 4), torch.nn.Sigmoid()).double()


def _our_mlp():
    return nn.Sequential(nn.Linear(6, 9), nn.ReLU(), nn.Linear(9, 7), nn.Tanh(), nn.Dropout(0.5), nn.Linear(7, 4),
                         nn.Sigmoid()).double()


def test_state_dict_names_match_torch_and_load():
    tm, om = _torch_mlp(), _our_mlp()
    assert list(om.state_dict()) == list(tm.state_dict())
    assert [n for n, _ in om.named_parameters()] == [n for n, _ in tm.named_parameters()]
    om.load_state_dict({k: v.detach().numpy() for k, v in tm.state_dict().items()})
    om.load_state_dict(tm.state_dict())  # tensors are accepted too
    tm.eval()
    om.eval()
    x = np.random.default_rng(0).standard_normal((5, 6))
    np.testing.assert_allclose(om(x), tm(torch.tensor(x)).detach().numpy(), rtol=1e-12, atol=1e-12)


def test_mlp_forward_backward_matches_torch():
    tm, om = _torch_mlp(), _our_mlp()
    tm[4].p = 0.0  # dropout off: compare the deterministic parts in training mode
    om[4].p = 0.0
    om.load_state_dict(tm.state_dict())
    rng = np.random.default_rng(1)
    x, r = rng.standard_normal((8, 6)), rng.standard_normal((8, 4))
    tx = _t(x)
    ty = tm(tx)
    (ty * torch.tensor(r)).sum().backward()
    y = om(x)
    gx = om.backward(r)
    np.testing.assert_allclose(y, ty.detach().numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(gx, tx.grad.numpy(), rtol=1e-10, atol=1e-12)
    for (name, p), (tname, tp) in zip(om.named_parameters(), tm.named_parameters()):
        assert name == tname
        np.testing.assert_allclose(p.grad, tp.grad.numpy(), rtol=1e-10, atol=1e-12, err_msg=name)


def test_residual_and_flatten_state_dict_names():
    om = nn.Sequential(nn.Flatten(), nn.Residual(nn.Sequential(nn.Linear(4, 4), nn.ReLU())), nn.Linear(4, 2))
    assert list(om.state_dict()) == ["1.block.0.weight", "1.block.0.bias", "2.weight", "2.bias"]


@pytest.mark.parametrize("smoothing", [0.0, 0.2])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_cross_entropy_matches_torch(smoothing, weighted, reduction):
    rng = np.random.default_rng(2)
    z = rng.standard_normal((7, 5)) * 2
    y = rng.integers(0, 5, 7)
    y[3] = -100
    w = rng.uniform(0.1, 3, 5) if weighted else None
    ours = nn.CrossEntropyLoss(weight=w, label_smoothing=smoothing, reduction=reduction)
    theirs = torch.nn.CrossEntropyLoss(weight=None if w is None else torch.tensor(w), label_smoothing=smoothing,
                                       reduction=reduction)
    tz = _t(z)
    tl = theirs(tz, torch.tensor(y))
    tl.sum().backward()
    loss, grad = ours(z, y)
    np.testing.assert_allclose(loss, tl.detach().numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(grad, tz.grad.numpy(), rtol=1e-10, atol=1e-12)


def test_cross_entropy_probability_targets_match_torch():
    rng = np.random.default_rng(3)
    z, t = rng.standard_normal((6, 4)), rng.dirichlet(np.ones(4), 6)
    w = rng.uniform(0.5, 2, 4)
    tz = _t(z)
    tl = torch.nn.CrossEntropyLoss(weight=torch.tensor(w), label_smoothing=0.1)(tz, torch.tensor(t))
    tl.backward()
    loss, grad = nn.CrossEntropyLoss(weight=w, label_smoothing=0.1)(z, t)
    np.testing.assert_allclose(loss, tl.item(), rtol=1e-12)
    np.testing.assert_allclose(grad, tz.grad.numpy(), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_mse_matches_torch(reduction):
    rng = np.random.default_rng(4)
    a, b = rng.standard_normal((5, 3)), rng.standard_normal((5, 3))
    ta = _t(a)
    tl = torch.nn.MSELoss(reduction=reduction)(ta, torch.tensor(b))
    tl.sum().backward()
    loss, grad = nn.MSELoss(reduction=reduction)(a, b)
    np.testing.assert_allclose(loss, tl.detach().numpy(), rtol=1e-12)
    np.testing.assert_allclose(grad, ta.grad.numpy(), rtol=1e-12)


def test_default_init_distribution_like_torch():
    m = nn.Linear(400, 300, generator=0)
    bound = 1 / np.sqrt(400)
    for p in (m.weight.data, m.bias.data):
        assert np.abs(p).max() <= bound
        assert np.abs(p).max() > 0.95 * bound
    # kaiming_uniform(a=sqrt(5)) has the variance of U(-1/sqrt(fan_in), 1/sqrt(fan_in))
    assert m.weight.data.var() == pytest.approx(bound ** 2 / 3, rel=0.03)
