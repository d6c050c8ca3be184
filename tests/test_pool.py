"""max / avg / adaptive pooling: naive reference at every ISA, torch, bad inputs."""
import numpy as np
import pytest

import fusedlearn as fl
from conv_reference import avg_pool_ref, max_pool_ref

F = fl.functional

# (shape, kernel, stride, padding, dilation, ceil_mode)
MAX_CASES = [
    ((2, 3, 8, 8), (2, 2), None, (0, 0), (1, 1), False),
    ((2, 3, 9, 10), (3, 3), (2, 2), (1, 1), (1, 1), True),
    ((1, 2, 11, 7), (3, 2), (2, 1), (1, 1), (2, 1), False),
    ((3, 5, 7), (2, 3), (3, 2), (1, 1), (1, 2), True),   # 3-D input
    ((2, 1, 5, 6), (5, 6), None, (2, 3), (1, 1), False),
    # windows inside the image (no padding, dilation 1): the vectorised path
    ((2, 2, 9, 150), (2, 2), None, (0, 0), (1, 1), False),   # odd height, rows of 75 outputs (runs of 64)
    ((1, 3, 7, 8), (3, 3), (1, 1), (0, 0), (1, 1), False),   # stride 1, overlapping windows
    ((2, 2, 11, 10), (2, 3), (3, 3), (0, 0), (1, 1), True),  # stride 3; ceil_mode whose windows stay inside
    # 2x2 stride 2 (its own row kernel, 16 outputs per step with AVX-512): LeNet's 28 -> 14 and
    # 10 -> 5, rows of exactly 16, 17 and 33 outputs, odd widths and heights
    ((2, 3, 28, 28), (2, 2), None, (0, 0), (1, 1), False),
    ((2, 2, 11, 11), (2, 2), None, (0, 0), (1, 1), False),
    ((1, 2, 4, 32), (2, 2), None, (0, 0), (1, 1), False),
    ((1, 2, 5, 35), (2, 2), None, (0, 0), (1, 1), False),
    ((1, 1, 3, 67), (2, 2), (2, 2), (0, 0), (1, 1), False),
]
AVG_CASES = [
    ((2, 3, 8, 8), (2, 2), None, (0, 0), False),
    ((2, 3, 9, 10), (3, 3), (2, 2), (1, 1), True),
    ((1, 2, 11, 7), (3, 2), (2, 1), (1, 1), False),
    ((3, 5, 7), (4, 3), (3, 2), (2, 1), True),
]


def _x(shape, dtype, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal(shape).astype(dtype), rng


@pytest.mark.parametrize("case", MAX_CASES)
def test_max_pool_vs_reference_every_isa(case, isa):
    shape, k, s, p, d, ceil = case
    x, rng = _x(shape, np.float32)
    y, idx = F.max_pool2d(x, k, s, p, d, ceil, return_indices=True)
    ry, ridx = max_pool_ref(x, k, s or k, p, d, ceil)
    np.testing.assert_array_equal(y, ry.astype(np.float32))
    np.testing.assert_array_equal(idx, ridx)
    gy = rng.standard_normal(y.shape).astype(np.float32)
    gx = F.max_pool2d_backward(gy, idx, x.shape, k, s, p, d, ceil)
    ref = np.zeros(x.size // (x.shape[-1] * x.shape[-2]) * x.shape[-2] * x.shape[-1])
    planes = ref.reshape(-1, x.shape[-2] * x.shape[-1])
    for pl, (g, i) in enumerate(zip(gy.reshape(len(planes), -1), ridx.reshape(len(planes), -1))):
        np.add.at(planes[pl], i, g)
    np.testing.assert_allclose(gx, ref.reshape(x.shape), rtol=1e-6, atol=1e-6)


def test_max_pool_nan_propagates_and_float64():
    x = np.arange(16, dtype=np.float64).reshape(1, 1, 4, 4)
    x[0, 0, 1, 0] = np.nan
    y = F.max_pool2d(x, 2)
    assert np.isnan(y[0, 0, 0, 0]) and y[0, 0, 1, 1] == 15.0


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_max_pool_ties_and_nan_inside_windows(dtype, isa):
    # few distinct values: many ties, where the first maximum of the window (row-major) wins
    rng = np.random.default_rng(3)
    x = rng.integers(0, 3, (2, 3, 10, 140)).astype(dtype)
    for k, s in (((2, 2), None), ((3, 3), (1, 1)), ((2, 3), (3, 2))):
        y, idx = F.max_pool2d(x, k, s, return_indices=True)
        ry, ridx = max_pool_ref(x, k, s or k, (0, 0), (1, 1), False)
        np.testing.assert_array_equal(y, ry.astype(dtype))
        np.testing.assert_array_equal(idx, ridx)
    for w in (10, 17, 33):  # 2x2 stride 2 on narrow rows and partial 16-output steps
        xw = np.ascontiguousarray(x[..., :w])
        y, idx = F.max_pool2d(xw, 2, return_indices=True)
        ry, ridx = max_pool_ref(xw, (2, 2), (2, 2), (0, 0), (1, 1), False)
        np.testing.assert_array_equal(y, ry.astype(dtype))
        np.testing.assert_array_equal(idx, ridx)
    # a NaN at every tap position of a 2x2 window propagates, and its index is reported
    for r in range(2):
        for c in range(2):
            xn = x.copy()
            xn[1, 2, 4 + r, 100 + c] = np.nan
            y, idx = F.max_pool2d(xn, 2, return_indices=True)
            assert np.isnan(y[1, 2, 2, 50]) and idx[1, 2, 2, 50] == (4 + r) * 140 + 100 + c
            assert np.isnan(y).sum() == 1


@pytest.mark.parametrize("case", AVG_CASES)
@pytest.mark.parametrize("count_include_pad", [True, False])
@pytest.mark.parametrize("divisor_override", [None, 5])
def test_avg_pool_vs_reference_every_isa(case, count_include_pad, divisor_override, isa):
    shape, k, s, p, ceil = case
    x, rng = _x(shape, np.float32)
    y = F.avg_pool2d(x, k, s, p, ceil, count_include_pad, divisor_override)
    ry, grad = avg_pool_ref(x, k, s or k, p, ceil, count_include_pad, divisor_override)
    np.testing.assert_allclose(y, ry, rtol=1e-5, atol=1e-6)
    gy = rng.standard_normal(y.shape).astype(np.float32)
    gx = F.avg_pool2d_backward(gy, x.shape, k, s, p, ceil, count_include_pad, divisor_override)
    np.testing.assert_allclose(gx, grad(gy), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("out_size", [1, (2, 3), (None, 1)])
def test_adaptive_avg_pool(out_size, isa):
    x, rng = _x((3, 4, 6, 9), np.float64)
    y = F.adaptive_avg_pool2d(x, out_size)
    oh, ow = (out_size, out_size) if isinstance(out_size, int) else out_size
    oh, ow = oh or 6, ow or 9
    ref = x.reshape(3, 4, oh, 6 // oh, ow, 9 // ow).mean(axis=(3, 5))
    np.testing.assert_allclose(y, ref, rtol=1e-12)
    gy = rng.standard_normal(y.shape)
    gx = F.adaptive_avg_pool2d_backward(gy, x.shape, out_size)
    ref_g = np.repeat(np.repeat(gy, 6 // oh, axis=2), 9 // ow, axis=3) / ((6 // oh) * (9 // ow))
    np.testing.assert_allclose(gx, ref_g, rtol=1e-12)


def test_pool_vs_torch():
    torch = pytest.importorskip("torch")
    tf = torch.nn.functional
    x, rng = _x((2, 3, 11, 9), np.float64, 3)
    xt = torch.tensor(x, requires_grad=True)
    for shape, k, s, p, d, ceil in MAX_CASES[:3]:
        yt, it = tf.max_pool2d(xt, k, s, p, d, ceil, return_indices=True)
        y, idx = F.max_pool2d(x, k, s, p, d, ceil, return_indices=True)
        np.testing.assert_array_equal(y, yt.detach().numpy())
        np.testing.assert_array_equal(idx, it.numpy())
        gy = rng.standard_normal(y.shape)
        xt.grad = None
        yt.backward(torch.tensor(gy))
        np.testing.assert_allclose(F.max_pool2d_backward(gy, idx, x.shape, k, s, p, d, ceil), xt.grad.numpy())
    for shape, k, s, p, ceil in AVG_CASES[:3]:
        for cip in (True, False):
            yt = tf.avg_pool2d(xt, k, s, p, ceil, cip)
            np.testing.assert_allclose(F.avg_pool2d(x, k, s, p, ceil, cip), yt.detach().numpy(), rtol=1e-12)
            gy = rng.standard_normal(tuple(yt.shape))
            xt.grad = None
            yt.backward(torch.tensor(gy))
            np.testing.assert_allclose(F.avg_pool2d_backward(gy, x.shape, k, s, p, ceil, cip), xt.grad.numpy(),
                                       rtol=1e-12)
    np.testing.assert_allclose(F.adaptive_avg_pool2d(x, 1), tf.adaptive_avg_pool2d(xt, 1).detach().numpy())
    # torch tensors in: torch out, indices as int64 tensors
    y, idx = F.max_pool2d(torch.tensor(x), 2, return_indices=True)
    assert isinstance(y, torch.Tensor) and idx.dtype == torch.int64


def test_pool_bad_inputs():
    x = np.zeros((2, 3, 8, 8), np.float32)
    with pytest.raises(ValueError, match="at most half the kernel"):
        F.max_pool2d(x, 2, padding=2)
    with pytest.raises(ValueError, match="3-D"):
        F.max_pool2d(x[0, 0], 2)
    with pytest.raises(ValueError, match="stride"):
        F.avg_pool2d(x, 2, stride=0)
    with pytest.raises(TypeError, match="kernel_size"):
        F.max_pool2d(x, 2.5)
    with pytest.raises(ValueError, match="empty"):
        F.max_pool2d(x, 9)
    with pytest.raises(ValueError, match="divisor_override"):
        F.avg_pool2d(x, 2, divisor_override=0)
    with pytest.raises(ValueError, match="must divide"):
        F.adaptive_avg_pool2d(x, 3)
    with pytest.raises(TypeError, match="int64"):
        F.max_pool2d_backward(np.zeros((2, 3, 4, 4), np.float32), np.zeros((2, 3, 4, 4), np.int32), x.shape, 2)
    with pytest.raises(ValueError, match="indices: expected shape"):
        F.max_pool2d_backward(np.zeros((2, 3, 4, 4), np.float32), np.zeros((2, 3, 4, 5), np.int64), x.shape, 2)
    with pytest.raises(ValueError, match="grad_output: expected shape"):
        F.avg_pool2d_backward(np.zeros((2, 3, 4, 5), np.float32), x.shape, 2)


def test_max_pool_backward_ignores_out_of_range_indices():
    gy = np.ones((1, 1, 2, 2), np.float32)
    idx = np.array([[[[0, 99], [-5, 15]]]], np.int64)
    gx = F.max_pool2d_backward(gy, idx, (1, 1, 4, 4), 2)
    assert gx.sum() == 2.0 and gx[0, 0, 0, 0] == 1.0 and gx[0, 0, 3, 3] == 1.0
