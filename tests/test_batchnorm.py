"""batch_norm: training / eval, running statistics, fused ReLU, gradients; reference at every ISA,
torch's BatchNorm2d, bad inputs."""
import numpy as np
import pytest

import fusedlearn as fl
from conv_reference import batch_norm_ref

F = fl.functional


@pytest.mark.parametrize("shape", [(4, 3, 5, 6), (2, 7, 1, 1), (1, 2, 33, 17), (5, 4, 3, 2)])
@pytest.mark.parametrize("relu", [False, True])
def test_batch_norm_training_vs_reference_every_isa(shape, relu, isa):
    rng = np.random.default_rng(0)
    dtype = np.float32
    x = (rng.standard_normal(shape) * 3 + 1.5).astype(dtype)
    C = shape[1]
    w, b = rng.standard_normal(C).astype(dtype), rng.standard_normal(C).astype(dtype)
    rm, rv = rng.standard_normal(C).astype(dtype), (rng.random(C) + 0.5).astype(dtype)
    rm0, rv0 = rm.copy(), rv.copy()
    act = "relu" if relu else None
    y, sm, si = F.batch_norm(x, rm, rv, w, b, True, 0.1, 1e-5, activation=act, return_stats=True)
    ry, mean, var, grad = batch_norm_ref(x, w.astype(np.float64), b.astype(np.float64), 1e-5)
    if relu:
        ry = np.maximum(ry, 0)
    np.testing.assert_allclose(y, ry, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(sm, mean, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(si, 1 / np.sqrt(var + 1e-5), rtol=1e-4)
    M = x.size // C
    np.testing.assert_allclose(rm, 0.9 * rm0 + 0.1 * mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(rv, 0.9 * rv0 + 0.1 * var * M / (M - 1), rtol=1e-5, atol=1e-6)
    gy = rng.standard_normal(shape).astype(dtype)
    gpre = gy * (ry > 0) if relu else gy
    rgx, rgw, rgb = grad(gpre)
    gx, gw, gb = F.batch_norm_backward(gy, x, w, sm, si, training=True, output=y, activation=act)
    np.testing.assert_allclose(gx, rgx, rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(gw, rgw, rtol=1e-3, atol=1e-3)
    np.testing.assert_allclose(gb, rgb, rtol=1e-4, atol=1e-4)


def test_batch_norm_eval_and_gradients_float64():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((3, 4, 5, 2))
    w, b = rng.standard_normal(4), rng.standard_normal(4)
    rm, rv = rng.standard_normal(4), rng.random(4) + 0.5
    y = F.batch_norm(x, rm, rv, w, b, False, 0.1, 1e-3)
    s = (w / np.sqrt(rv + 1e-3))[None, :, None, None]
    np.testing.assert_allclose(y, (x - rm[None, :, None, None]) * s + b[None, :, None, None], rtol=1e-12)
    gy = rng.standard_normal(x.shape)
    gx, gw, gb = F.batch_norm_backward(gy, x, w, None, None, rm, rv, training=False, eps=1e-3)
    np.testing.assert_allclose(gx, gy * s, rtol=1e-12)
    np.testing.assert_allclose(gb, gy.sum(axis=(0, 2, 3)), rtol=1e-12)
    xhat = (x - rm[None, :, None, None]) / np.sqrt(rv + 1e-3)[None, :, None, None]
    np.testing.assert_allclose(gw, (gy * xhat).sum(axis=(0, 2, 3)), rtol=1e-12)


def test_batch_norm_large_mean_is_stable():
    # two-pass statistics: a large offset must not destroy the variance
    rng = np.random.default_rng(2)
    x = (1e4 + rng.standard_normal((8, 2, 16, 16))).astype(np.float32)
    _, sm, si = F.batch_norm(x, None, None, None, None, True, 0.1, 1e-5, return_stats=True)
    np.testing.assert_allclose(1 / si ** 2, x.astype(np.float64).var(axis=(0, 2, 3)) + 1e-5, rtol=1e-3)


def test_batchnorm2d_module_vs_torch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(3)
    for momentum in (0.1, None):
        ours = fl.nn.BatchNorm2d(3, momentum=momentum, activation=None).double()
        theirs = torch.nn.BatchNorm2d(3, momentum=momentum).double()
        ours.weight.data[:] = rng.standard_normal(3)
        ours.bias.data[:] = rng.standard_normal(3)
        theirs.load_state_dict({k: torch.tensor(np.asarray(v)) for k, v in ours.state_dict().items()})
        for _ in range(3):
            x = rng.standard_normal((4, 3, 5, 5)) * 2 + 1
            xt = torch.tensor(x, requires_grad=True)
            yt = theirs(xt)
            y = ours(x)
            np.testing.assert_allclose(y, yt.detach().numpy(), rtol=1e-10, atol=1e-10)
            gy = rng.standard_normal(x.shape)
            yt.backward(torch.tensor(gy))
            np.testing.assert_allclose(ours.backward(gy), xt.grad.numpy(), rtol=1e-9, atol=1e-10)
        for k, v in theirs.state_dict().items():
            np.testing.assert_allclose(np.asarray(ours.state_dict()[k]), v.numpy(), rtol=1e-10, err_msg=k)
        np.testing.assert_allclose(ours.weight.grad, theirs.weight.grad.numpy(), rtol=1e-9)
        np.testing.assert_allclose(ours.bias.grad, theirs.bias.grad.numpy(), rtol=1e-9)
        ours.eval()
        theirs.eval()
        x = rng.standard_normal((2, 3, 4, 4))
        np.testing.assert_allclose(ours(x), theirs(torch.tensor(x)).detach().numpy(), rtol=1e-10, atol=1e-12)
    assert list(ours.state_dict()) == list(theirs.state_dict())


def test_batchnorm2d_no_running_stats_and_no_affine():
    rng = np.random.default_rng(4)
    m = fl.nn.BatchNorm2d(2, affine=False, track_running_stats=False).double()
    assert list(m.state_dict()) == []
    x = rng.standard_normal((3, 2, 4, 4))
    m.eval()  # no running stats: batch statistics even in eval, as torch
    ry, _, _, _ = batch_norm_ref(x, np.ones(2), np.zeros(2), 1e-5)
    np.testing.assert_allclose(m(x), ry, rtol=1e-10, atol=1e-12)


def test_batch_norm_bad_inputs():
    x = np.zeros((2, 3, 4, 4), np.float32)
    c = np.zeros(3, np.float32)
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        F.batch_norm(np.zeros((1, 3, 1, 1), np.float32), None, None, training=True)
    with pytest.raises(ValueError, match="running_mean: expected shape"):
        F.batch_norm(x, np.zeros(4, np.float32), np.ones(4, np.float32))
    with pytest.raises(ValueError, match="needs running_mean"):
        F.batch_norm(x, None, None, training=False)
    with pytest.raises(TypeError, match="float32"):
        F.batch_norm(x, c.astype(np.float64), c.astype(np.float64), training=True)
    with pytest.raises(ValueError, match="both running_mean and running_var"):
        F.batch_norm(x, c, None, training=True)
    with pytest.raises(ValueError, match="activation"):
        F.batch_norm(x, c, c + 1, activation="tanh")
    with pytest.raises(ValueError, match="expected 4D input"):
        fl.nn.BatchNorm2d(3)(x[0])
    with pytest.raises(ValueError, match="expected 3 channels"):
        fl.nn.BatchNorm2d(3)(np.zeros((2, 4, 2, 2), np.float32))
    with pytest.raises(ValueError, match="save_mean"):
        F.batch_norm_backward(x, x, c, None, None, training=True)
