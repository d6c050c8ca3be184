"""Convolution, pooling and batch norm on CUDA tensors against the CPU kernels.

Skipped unless this build has CUDA, a GPU is visible and torch has CUDA (the
functional API allocates its results with torch on the input's device).  The
CPU kernels are themselves checked against torch and a naive reference
(test_conv.py, test_pool.py, test_batchnorm.py), so each case here runs the same
call on the GPU and on the CPU and compares: forward, every gradient, strides,
paddings, dilations, groups (incl. depthwise), fused activations, ceil_mode,
count_include_pad, batch norm's training / evaluation and running statistics.
"""
import numpy as np
import pytest

from fusedlearn import _C
from fusedlearn import functional as F

import gpu_arrays

if _C.cuda_device_count() == 0:
    pytest.skip("no CUDA device (or a build without CUDA)", allow_module_level=True)
BK = gpu_arrays.backend()
if BK is None or BK.name != "torch":
    pytest.skip("the functional CUDA path allocates with torch: needs torch with CUDA", allow_module_level=True)


def dev(a):
    return BK.to_dev(np.ascontiguousarray(a)).view(a.shape)


def close(got, want, what, rtol=2e-5):
    """float32 results of a different summation order: error within rtol of the
    largest magnitude (plus a floor for exact zeros)."""
    got = BK.to_np(got).astype(np.float64) if not isinstance(got, np.ndarray) else got.astype(np.float64)
    want = np.asarray(want, np.float64)
    assert got.shape == want.shape, f"{what}: shape {got.shape} != {want.shape}"
    lim = rtol * (np.abs(want).max() + 1.0)
    err = np.abs(got - want).max() if want.size else 0.0
    assert err <= lim, f"{what}: max error {err:.3g} > {lim:.3g}"


CONV_CASES = [  # (N, C, H, W), K, (R, S), stride, padding, dilation, groups
    ((2, 3, 9, 11), 5, (3, 3), 1, 1, 1, 1),
    ((2, 4, 12, 10), 6, (3, 3), 2, 1, 1, 1),
    ((1, 6, 13, 13), 4, (5, 3), (2, 1), (2, 0), 1, 2),
    ((2, 8, 10, 10), 8, (3, 3), 1, 2, 2, 8),     # depthwise, dilated
    ((3, 8, 7, 9), 16, (3, 3), 1, 1, 1, 8),      # depthwise with a channel multiplier
    ((2, 16, 8, 8), 32, (1, 1), 1, 0, 1, 1),     # pointwise
    ((1, 3, 28, 28), 6, (5, 5), 1, 2, 1, 1),     # LeNet's first layer
]


@pytest.mark.parametrize("act", [None, "relu", "tanh", "sigmoid"])
@pytest.mark.parametrize("case", CONV_CASES, ids=[f"{c[0]}->{c[1]}k{c[2]}s{c[3]}g{c[6]}" for c in CONV_CASES])
def test_conv2d_forward_backward(case, act):
    xs, k, (r, s), stride, pad, dil, groups = case
    rng = np.random.default_rng(0)
    x = rng.standard_normal(xs).astype(np.float32)
    w = (rng.standard_normal((k, xs[1] // groups, r, s)) * 0.3).astype(np.float32)
    b = rng.standard_normal(k).astype(np.float32)
    y = F.conv2d(x, w, b, stride, pad, dil, groups, activation=act)
    yd = F.conv2d(dev(x), dev(w), dev(b), stride, pad, dil, groups, activation=act)
    close(yd, y, f"conv2d {case} {act}")
    gy = rng.standard_normal(y.shape).astype(np.float32)
    want = F.conv2d_backward(gy, x, w, stride, pad, dil, groups, output=y, activation=act)
    got = F.conv2d_backward(dev(gy), dev(x), dev(w), stride, pad, dil, groups, output=yd, activation=act)
    for name, g, wnt in zip(("grad_input", "grad_weight", "grad_bias"), got, want):
        close(g, wnt, f"conv2d {case} {act} {name}", rtol=5e-5)


def test_conv2d_backward_accumulates_into_given_gradients():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 4, 8, 8)).astype(np.float32)
    w = rng.standard_normal((6, 4, 3, 3)).astype(np.float32)
    gy = rng.standard_normal((2, 6, 8, 8)).astype(np.float32)
    gw0 = rng.standard_normal(w.shape).astype(np.float32)
    gb0 = rng.standard_normal(6).astype(np.float32)
    _, gw, gb = F.conv2d_backward(gy, x, w, 1, 1, input_grad=False)
    gwd, gbd = dev(gw0), dev(gb0)
    F.conv2d_backward(dev(gy), dev(x), dev(w), 1, 1, input_grad=False, grad_weight=gwd, grad_bias=gbd,
                      accumulate=True)
    close(gwd, gw0 + gw, "accumulated grad_weight", rtol=5e-5)
    close(gbd, gb0 + gb, "accumulated grad_bias", rtol=5e-5)


POOL_CASES = [  # (N, C, H, W), kernel, stride, padding, ceil_mode
    ((2, 3, 8, 8), 2, 2, 0, False),
    ((1, 2, 9, 7), 3, 2, 1, False),
    ((2, 2, 9, 7), 3, 2, 1, True),
    ((1, 4, 6, 6), (2, 3), (1, 2), (1, 1), False),
]


@pytest.mark.parametrize("case", POOL_CASES)
def test_max_pool2d(case):
    xs, k, s, p, ceil = case
    rng = np.random.default_rng(2)
    x = rng.standard_normal(xs).astype(np.float32)
    y = F.max_pool2d(x, k, s, p, ceil_mode=ceil, return_indices=True)
    xd = dev(x)
    yd = F.max_pool2d(xd, k, s, p, ceil_mode=ceil)
    close(yd, y[0], f"max_pool2d {case}", rtol=0)
    gy = rng.standard_normal(y[0].shape).astype(np.float32)
    want = F.max_pool2d_backward(gy, y[1], xs, k, s, p, ceil_mode=ceil)
    got = F.max_pool2d_backward(dev(gy), None, xs, k, s, p, ceil_mode=ceil, input=xd)
    close(got, want, f"max_pool2d backward {case}", rtol=1e-6)


@pytest.mark.parametrize("count_include_pad", [True, False])
@pytest.mark.parametrize("case", POOL_CASES)
def test_avg_pool2d(case, count_include_pad):
    xs, k, s, p, ceil = case
    rng = np.random.default_rng(3)
    x = rng.standard_normal(xs).astype(np.float32)
    y = F.avg_pool2d(x, k, s, p, ceil, count_include_pad)
    close(F.avg_pool2d(dev(x), k, s, p, ceil, count_include_pad), y, f"avg_pool2d {case}", rtol=1e-6)
    gy = rng.standard_normal(y.shape).astype(np.float32)
    want = F.avg_pool2d_backward(gy, xs, k, s, p, ceil, count_include_pad)
    got = F.avg_pool2d_backward(dev(gy), xs, k, s, p, ceil, count_include_pad)
    close(got, want, f"avg_pool2d backward {case}", rtol=1e-6)


def test_global_average_pool():
    x = np.random.default_rng(4).standard_normal((3, 5, 7, 7)).astype(np.float32)
    close(F.adaptive_avg_pool2d(dev(x), 1), F.adaptive_avg_pool2d(x, 1), "adaptive_avg_pool2d(1)", rtol=1e-6)


@pytest.mark.parametrize("act", [None, "relu"])
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("affine", [True, False])
def test_batch_norm(training, affine, act):
    rng = np.random.default_rng(5)
    x = (rng.standard_normal((4, 6, 5, 7)) * 3 + 1).astype(np.float32)
    w = rng.standard_normal(6).astype(np.float32) if affine else None
    b = rng.standard_normal(6).astype(np.float32) if affine else None
    rm, rv = rng.standard_normal(6).astype(np.float32), rng.uniform(0.5, 2, 6).astype(np.float32)
    rmd, rvd = dev(rm), dev(rv)
    y, sm, si = F.batch_norm(x, rm, rv, w, b, training, 0.1, 1e-5, activation=act, return_stats=True)
    wd = None if w is None else dev(w)
    bd = None if b is None else dev(b)
    yd, smd, sid = F.batch_norm(dev(x), rmd, rvd, wd, bd, training, 0.1, 1e-5, activation=act, return_stats=True)
    close(yd, y, "batch_norm output")
    close(rmd, rm, "running_mean")
    close(rvd, rv, "running_var")
    if training:
        close(smd, sm, "save_mean")
        close(sid, si, "save_invstd")
    gy = rng.standard_normal(x.shape).astype(np.float32)
    want = F.batch_norm_backward(gy, x, w, sm, si, rm, rv, training, 1e-5, output=y, activation=act)
    got = F.batch_norm_backward(dev(gy), dev(x), wd, smd, sid, rmd, rvd, training, 1e-5, output=yd, activation=act)
    for name, g, wnt in zip(("grad_input", "grad_weight", "grad_bias"), got, want):
        if wnt is None:
            assert g is None, name
        else:
            close(g, wnt, f"batch_norm {name}", rtol=5e-5)
