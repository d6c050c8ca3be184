"""Module API: registration, names, slicing, state dicts, modes, devices, init, clear errors."""
import numpy as np
import pytest

import fusedlearn as fl
from fusedlearn import nn


def mlp(seed=0):
    g = np.random.default_rng(seed)
    return nn.Sequential(nn.Linear(8, 16, generator=g), nn.ReLU(), nn.Dropout(0.3, seed=1),
                         nn.Linear(16, 4, generator=g))


def test_named_parameters_and_torch_names():
    m = nn.Sequential(nn.Linear(3, 4), nn.Residual(nn.Sequential(nn.Linear(4, 4), nn.Tanh())))
    assert [n for n, _ in m.named_parameters()] == ["0.weight", "0.bias", "1.block.0.weight", "1.block.0.bias"]
    assert len(list(m.parameters())) == 4
    assert m.num_parameters() == 3 * 4 + 4 + 16 + 4
    assert all(isinstance(p, nn.Parameter) for p in m.parameters())


def test_sequential_indexing_and_slicing_share_modules():
    m = mlp()
    assert len(m) == 4
    assert isinstance(m[0], nn.Linear) and m[-1] is m[3]
    head, tail = m[:2], m[2:]
    assert isinstance(head, nn.Sequential) and len(head) == 2 and len(tail) == 2
    assert head[0] is m[0] and tail[1] is m[3]
    assert [n for n, _ in tail.named_parameters()] == ["3.weight", "3.bias"]
    assert list(iter(m))[1] is m[1]
    m.eval()
    x = np.random.default_rng(0).random((5, 8), dtype=np.float32)
    np.testing.assert_array_equal(m(x), tail(head(x)))
    # backward through the pieces equals backward through the whole
    m.train()
    m[2].p = 0.0
    g = np.ones((5, 4), np.float32)
    m(x)
    full = m.backward(g)
    tail(head(x))
    np.testing.assert_allclose(head.backward(tail.backward(g)), full, rtol=1e-6)
    with pytest.raises(IndexError):
        m[4]


def test_state_dict_roundtrip_and_optimizer_keeps_working():
    a, b = mlp(0), mlp(1)
    opt = fl.optim.SGD(b.parameters(), lr=0.1)
    before = [p.data for p in b.parameters()]
    assert b.load_state_dict({k: v.copy() for k, v in a.state_dict().items()}) == ([], [])
    assert all(p.data is arr for p, arr in zip(b.parameters(), before))  # copied in place
    for (k, v), w in zip(a.state_dict().items(), b.state_dict().values()):
        np.testing.assert_array_equal(v, w)
    for p in b.parameters():
        p.grad = np.ones_like(p.data)
    opt.step()
    assert not np.array_equal(a[0].weight.data, b[0].weight.data)


def test_load_state_dict_errors():
    m = mlp()
    sd = {k: v.copy() for k, v in m.state_dict().items()}
    with pytest.raises(RuntimeError, match="Missing key"):
        m.load_state_dict({k: v for k, v in sd.items() if k != "3.bias"})
    with pytest.raises(RuntimeError, match="Unexpected key"):
        m.load_state_dict({**sd, "9.weight": np.zeros(3)})
    bad = dict(sd)
    bad["0.weight"] = np.zeros((3, 3), np.float32)
    with pytest.raises(ValueError, match="size mismatch for 0.weight"):
        m.load_state_dict(bad)
    res = m.load_state_dict({k: v for k, v in sd.items() if k != "3.bias"}, strict=False)
    assert res.missing_keys == ["3.bias"] and res.unexpected_keys == []


def test_train_eval_dropout_reproducible():
    m = mlp()
    x = np.ones((4, 8), np.float32)
    assert m.training and m[2].training
    m.eval()
    assert not m[2].training
    np.testing.assert_array_equal(m[2](x), x)
    m.train()
    d1, d2 = nn.Dropout(0.5, seed=3), nn.Dropout(0.5, seed=3)
    y1, y2 = d1(np.ones((50, 20))), d2(np.ones((50, 20)))
    np.testing.assert_array_equal(y1, y2)
    assert set(np.unique(y1)) == {0.0, 2.0}
    assert 0.4 < (y1 == 0).mean() < 0.6
    state = d1.get_rng_state()
    a = d1(np.ones(10))
    d1.set_rng_state(state)
    np.testing.assert_array_equal(d1(np.ones(10)), a)


def test_to_device_and_dtype():
    m = mlp()
    assert m.to("cpu") is m
    with pytest.raises(ValueError, match="CPU only"):
        m.to("cuda")
    with pytest.raises(ValueError, match="CPU only"):
        m.to("cuda:0")
    m.double()
    assert all(p.dtype == np.float64 for p in m.parameters())
    m.to(dtype=np.float32)
    assert all(p.dtype == np.float32 for p in m.parameters())


def test_zero_grad():
    m = mlp()
    m(np.ones((2, 8), np.float32))
    m.backward(np.ones((2, 4), np.float32))
    assert all(p.grad is not None for p in m.parameters())
    m.zero_grad(set_to_none=False)
    assert all(not p.grad.any() for p in m.parameters())
    m.zero_grad()
    assert all(p.grad is None for p in m.parameters())


def test_init_functions():
    g = np.random.default_rng(0)
    w = nn.Parameter(np.empty((200, 300), np.float32))
    nn.init.kaiming_uniform_(w, nonlinearity="relu", generator=g)
    assert np.abs(w.data).max() <= np.sqrt(6 / 300)
    nn.init.kaiming_normal_(w, nonlinearity="relu", generator=g)
    assert w.data.std() == pytest.approx(np.sqrt(2 / 300), rel=0.03)
    nn.init.xavier_uniform_(w, generator=g)
    assert np.abs(w.data).max() <= np.sqrt(6 / 500)
    nn.init.xavier_normal_(w.data, gain=2.0, generator=g)
    assert w.data.std() == pytest.approx(2 * np.sqrt(2 / 500), rel=0.03)
    nn.init.uniform_(w, -2, 3, generator=g)
    assert w.data.min() >= -2 and w.data.max() <= 3
    nn.init.normal_(w, 1.0, 0.5, generator=g)
    assert w.data.mean() == pytest.approx(1.0, abs=0.01)
    nn.init.zeros_(w)
    assert not w.data.any()
    nn.init.ones_(w)
    assert (w.data == 1).all()
    nn.init.manual_seed(5)
    a = nn.Linear(3, 3).weight.data.copy()
    nn.init.manual_seed(5)
    np.testing.assert_array_equal(nn.Linear(3, 3).weight.data, a)
    np.testing.assert_array_equal(nn.Linear(3, 3, generator=1).weight.data, nn.Linear(3, 3, generator=1).weight.data)
    assert nn.init.calculate_gain("tanh") == pytest.approx(5 / 3)
    with pytest.raises(TypeError):
        nn.init.zeros_(np.zeros(3, np.int32))


# ---- clear errors ---------------------------------------------------------------------
def test_shape_mismatch_between_layers_names_layer_and_shapes():
    m = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(15, 4))
    with pytest.raises(ValueError) as e:
        m(np.ones((3, 8), np.float32))
    msg = str(e.value)
    assert "layer 2" in msg and "in_features=15" in msg and "(3, 16)" in msg
    with pytest.raises(ValueError, match="Residual"):
        nn.Residual(nn.Linear(4, 5))(np.ones((2, 4), np.float32))
    with pytest.raises(ValueError, match=r"backward: grad_out has shape"):
        lin = nn.Linear(2, 3)
        lin(np.ones((4, 2), np.float32))
        lin.backward(np.ones((4, 2), np.float32))


@pytest.mark.parametrize("layer", [nn.Linear(3, 2), nn.ReLU(), nn.Tanh(), nn.Sigmoid(), nn.Dropout(0.1),
                                   nn.Flatten(), nn.Sequential(nn.Linear(3, 2))])
def test_integer_input_is_a_type_error(layer):
    with pytest.raises(TypeError, match="floating-point"):
        layer(np.ones((2, 3), np.int64))


def test_loss_errors():
    ce = nn.CrossEntropyLoss()
    z = np.zeros((3, 4), np.float32)
    with pytest.raises(ValueError, match="out of range"):
        ce(z, np.array([0, 4, 1]))
    with pytest.raises(ValueError, match="out of range"):
        ce(z, np.array([0, -1, 1]))
    with pytest.raises(TypeError):
        ce(z, np.array([0.0, 1.0, 2.0]))
    with pytest.raises(TypeError):
        ce(np.zeros((3, 4), np.int32), np.array([0, 1, 2]))
    with pytest.raises(ValueError, match=r"shape \(3,\)"):
        ce(z, np.array([0, 1]))
    with pytest.raises(ValueError):
        ce(np.zeros(4, np.float32), np.array([1]))
    with pytest.raises(ValueError, match="weight has 3"):
        nn.CrossEntropyLoss(weight=[1, 1, 1])(z, np.array([0, 1, 2]))
    with pytest.raises(ValueError):
        nn.CrossEntropyLoss(reduction="avg")
    with pytest.raises(ValueError, match="target has shape"):
        nn.MSELoss()(np.zeros((2, 3)), np.zeros((3, 2)))
    with pytest.raises(TypeError):
        nn.MSELoss()(np.zeros((2, 3), np.int64), np.zeros((2, 3)))


def test_constructor_errors():
    with pytest.raises(ValueError):
        nn.Dropout(1.5)
    with pytest.raises(ValueError):
        nn.Linear(3, 2, activation="gelu")
    with pytest.raises(TypeError):
        nn.Sequential(nn.Linear(2, 2), "relu")
    with pytest.raises(TypeError):
        nn.Residual(lambda x: x)
    with pytest.raises(RuntimeError):
        nn.Linear(2, 2).backward(np.ones((1, 2), np.float32))


@pytest.mark.parametrize("act,cls", [("relu", nn.ReLU), ("tanh", nn.Tanh), ("sigmoid", nn.Sigmoid)])
def test_fused_activation_equals_separate_layer(act, cls):
    rng = np.random.default_rng(0)
    fused = nn.Linear(6, 5, activation=act, generator=1)
    plain = nn.Sequential(nn.Linear(6, 5, generator=1), cls())
    assert list(fused.state_dict()) == ["weight", "bias"]
    x, g = rng.standard_normal((4, 6)).astype(np.float32), rng.standard_normal((4, 5)).astype(np.float32)
    np.testing.assert_allclose(fused(x), plain(x), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(fused.backward(g), plain.backward(g), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(fused.weight.grad, plain[0].weight.grad, rtol=1e-5, atol=1e-6)
    # float64 input to a float32 layer is cast; the output keeps the layer's dtype
    assert fused(x.astype(np.float64)).dtype == np.float32


def test_backward_params_skips_only_the_input_gradient():
    """backward_params: the same parameter gradients as backward, no input gradient (first layer a
    Conv2d, a Linear, or a module without its own backward_params)."""
    from fusedlearn import nn
    rng = np.random.default_rng(0)
    for first, shape in ((nn.Conv2d(2, 4, 3, padding=1, activation="relu", generator=1), (3, 2, 6, 6)),
                         (nn.Linear(72, 72, activation="tanh", generator=2), (3, 72)),
                         (nn.ReLU(), (3, 72))):
        models = []
        for _ in range(2):
            tail = [nn.Flatten(), nn.Linear(144 if isinstance(first, nn.Conv2d) else 72, 5, generator=3)]
            m = nn.Sequential(first, *tail)
            models.append(m)
        x = rng.standard_normal(shape).astype(np.float32)
        g = rng.standard_normal((3, 5)).astype(np.float32)
        grads = []
        for i, m in enumerate(models):
            for prm in m.parameters():
                prm.grad = None
            m(x)
            out = m.backward(g) if i == 0 else m.backward_params(g)
            assert (out is None) == (i == 1)
            grads.append([prm.grad.copy() for prm in m.parameters()])
        for a, b in zip(*grads):
            np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
