"""conv2d forward and every gradient: against a naive numpy reference at every ISA, against
torch.nn.functional, and bad inputs against the exact exception."""
import numpy as np
import pytest

import fusedlearn as fl
from conv_reference import conv2d_ref

F = fl.functional

# (N, C, H, W, K, (R, S), stride, padding, dilation, groups): every code path --
# im2col bands (with several bands when the column budget is small), pointwise GEMM,
# depthwise (with channel multiplier), grouped, odd sizes, strides, dilations.  Which path a
# shape takes depends on the ISA (its vector width); the tests below assert it with
# F.conv2d_paths where a shape is meant for one path, and test_conv2d_every_path_every_isa
# checks that these lists exercise every path of every pass at every ISA.
CASES = [
    (2, 3, 9, 8, 4, (3, 3), (1, 1), (1, 1), (1, 1), 1),
    (3, 4, 10, 11, 6, (3, 2), (2, 1), (1, 0), (2, 1), 2),
    (2, 6, 7, 7, 12, (3, 3), (1, 1), (1, 1), (1, 1), 6),   # depthwise, multiplier 2
    (1, 5, 9, 6, 5, (5, 3), (2, 3), (2, 1), (1, 2), 5),     # depthwise, strided
    (2, 6, 7, 5, 4, (1, 1), (1, 1), (0, 0), (1, 1), 2),     # pointwise, grouped
    (3, 8, 5, 5, 16, (1, 1), (2, 2), (0, 0), (1, 1), 1),    # 1x1 strided: im2col input gradient
    (2, 1, 13, 13, 3, (5, 5), (1, 1), (2, 2), (1, 1), 1),   # one input channel (LeNet's first layer)
    (1, 3, 4, 4, 2, (4, 4), (1, 1), (0, 0), (1, 1), 1),     # kernel = image
    (2, 4, 6, 9, 6, (2, 3), (3, 2), (1, 1), (2, 1), 2),
    (4, 16, 33, 35, 8, (3, 3), (1, 1), (1, 1), (1, 1), 1),  # several row bands per image (AVX-512)
    (1, 16, 64, 64, 5, (3, 3), (1, 1), (0, 0), (2, 2), 1),  # im2col at every ISA: 9 row bands
]

PASSES = ("forward", "input_grad", "weight_grad")
PATHS = {"im2col", "pointwise", "depthwise", "direct", "channel_vector"}


def _paths(case, dtype="float32"):
    N, C, H, W, K, (R, S), st, pad, dil, groups = case
    return F.conv2d_paths((N, C, H, W), (K, C // groups, R, S), st, pad, dil, groups, dtype=dtype)


def _assert_paths(case, **want):
    got = _paths(case)
    assert {k: got[k] for k in want} == want, f"{case} at {fl.get_isa()}: {got}"



def _random_case(rng):
    groups = int(rng.choice([1, 1, 2, 3]))
    cg, kg = int(rng.integers(1, 4)), int(rng.integers(1, 4))
    R, S = int(rng.integers(1, 5)), int(rng.integers(1, 5))
    dil = (int(rng.integers(1, 3)), int(rng.integers(1, 3)))
    pad = (int(rng.integers(0, R)), int(rng.integers(0, S)))
    st = (int(rng.integers(1, 4)), int(rng.integers(1, 4)))
    H = dil[0] * (R - 1) + 1 + int(rng.integers(0, 8))
    W = dil[1] * (S - 1) + 1 + int(rng.integers(0, 8))
    return (int(rng.integers(1, 4)), cg * groups, H, W, kg * groups, (R, S), st, pad, dil, groups)


RANDOM = [_random_case(np.random.default_rng(100 + i)) for i in range(10)]


def _data(case, dtype, seed=0):
    N, C, H, W, K, (R, S), st, pad, dil, groups = case
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((N, C, H, W)).astype(dtype)
    w = rng.standard_normal((K, C // groups, R, S)).astype(dtype)
    b = rng.standard_normal(K).astype(dtype)
    return x, w, b, rng


def _check(case, dtype, activation=None):
    _, _, _, _, _, _, st, pad, dil, groups = case
    x, w, b, rng = _data(case, dtype)
    tol = dict(rtol=2e-4, atol=2e-4) if dtype == np.float32 else dict(rtol=1e-10, atol=1e-10)
    pre, grad = conv2d_ref(x, w, b, st, pad, dil, groups)
    ref = {None: pre, "relu": np.maximum(pre, 0), "tanh": np.tanh(pre), "sigmoid": 1 / (1 + np.exp(-pre))}[activation]
    y = F.conv2d(x, w, b, st, pad, dil, groups, activation=activation)
    assert y.dtype == dtype and y.shape == ref.shape
    np.testing.assert_allclose(y, ref, **tol)
    gy = rng.standard_normal(y.shape).astype(dtype)
    gpre = {None: gy, "relu": gy * (pre > 0), "tanh": gy * (1 - ref ** 2), "sigmoid": gy * ref * (1 - ref)}[activation]
    rgx, rgw, rgb = grad(gpre)
    gx, gw, gb = F.conv2d_backward(gy, x, w, st, pad, dil, groups, output=y, activation=activation)
    np.testing.assert_allclose(gx, rgx, **tol)
    np.testing.assert_allclose(gw, rgw, **tol)
    np.testing.assert_allclose(gb, rgb, **tol)


@pytest.mark.parametrize("case", CASES + RANDOM)
def test_conv2d_vs_reference_every_isa(case, isa):
    if case in (CASES[2], CASES[3], RANDOM[3]):
        _assert_paths(case, forward="depthwise", input_grad="depthwise", weight_grad="depthwise")
    if case == CASES[4]:
        _assert_paths(case, forward="pointwise", input_grad="pointwise", weight_grad="pointwise")
    if case == CASES[5]:
        _assert_paths(case, input_grad="im2col")
    if case == CASES[-1]:
        _assert_paths(case, forward="im2col", input_grad="im2col", weight_grad="im2col")
    _check(case, np.float32)


@pytest.mark.parametrize("case", CASES[:5])
@pytest.mark.parametrize("activation", [None, "relu", "tanh", "sigmoid"])
def test_conv2d_float64_activations(case, activation):
    _check(case, np.float64, activation)


@pytest.mark.parametrize("case", CASES[:4] + CASES[8:])
def test_conv2d_threads(case, threads):
    _check(case, np.float32, "relu")


# Small output images (OH*OW < 256) run one GEMM over a band of several images
# (about 256 columns per band): batches whose last band is partial, a single
# image left over, groups, dilation, strides.
# (Few output channels and a dilation or a stride, so that neither the direct nor the
# channel-vector kernel takes them at any ISA.)
MULTI_IMAGE = [
    (7, 4, 9, 10, 5, (3, 3), (1, 1), (1, 1), (1, 2), 1),     # 72 columns/image: bands of 4, 4 + 3
    (19, 6, 10, 10, 6, (3, 3), (2, 2), (1, 1), (2, 2), 3),   # 16 columns/image: bands of 16, 16 + 3; groups, dilation
    (9, 2, 12, 13, 2, (3, 2), (1, 1), (0, 1), (1, 2), 1),    # 130 columns/image: bands of 2, last one image
    (5, 4, 17, 16, 4, (3, 3), (2, 2), (1, 1), (1, 1), 2),    # 9x8 output, stride 2 (the 16x16 -> 8x8 shape)
]


@pytest.mark.parametrize("case", MULTI_IMAGE)
def test_conv2d_multi_image_bands_every_isa(case, isa):
    _assert_paths(case, forward="im2col", input_grad="im2col", weight_grad="im2col")
    _check(case, np.float32)
    _check(case, np.float32, "relu")


@pytest.mark.parametrize("case", MULTI_IMAGE)
@pytest.mark.parametrize("activation", [None, "tanh"])
def test_conv2d_multi_image_bands_float64(case, activation):
    _check(case, np.float64, activation)


@pytest.mark.parametrize("case", MULTI_IMAGE)
def test_conv2d_multi_image_bands_threads(case, threads):
    _check(case, np.float32, "sigmoid")


@pytest.mark.parametrize("case", [CASES[1], (2, 3, 7, 31, 5, (3, 3), (1, 1), (1, 1), (1, 1), 1),  # im2col; direct dx / dw
                                  (3, 5, 11, 9, 28, (3, 3), (2, 2), (1, 1), (1, 1), 1)])  # channel-vector dw
def test_conv2d_accumulate_and_partial_grads(case):
    _, _, _, _, _, _, st, pad, dil, groups = case
    x, w, b, rng = _data(case, np.float64)
    y = F.conv2d(x, w, b, st, pad, dil, groups)
    gy = rng.standard_normal(y.shape)
    _, gw, gb = F.conv2d_backward(gy, x, w, st, pad, dil, groups)
    gw0, gb0 = np.full_like(gw, 2.0), np.full_like(gb, -1.0)
    gx, gw1, gb1 = F.conv2d_backward(gy, x, w, st, pad, dil, groups, input_grad=False, grad_weight=gw0.copy(),
                                     grad_bias=gb0.copy(), accumulate=True)
    assert gx is None
    np.testing.assert_allclose(gw1, gw0 + gw, rtol=1e-12)
    np.testing.assert_allclose(gb1, gb0 + gb, rtol=1e-12)
    gx2, gw2, gb2 = F.conv2d_backward(gy, x, w, st, pad, dil, groups, weight_grad=False, bias_grad=False)
    assert gw2 is None and gb2 is None and gx2.shape == x.shape
    gx3, _, _ = F.conv2d_backward(gy, x, w, st, pad, dil, groups)
    np.testing.assert_allclose(gx2, gx3, rtol=1e-12)


@pytest.mark.parametrize("case", [CASES[0], CASES[2], CASES[4], RANDOM[3]])
def test_conv2d_vs_torch(case):
    torch = pytest.importorskip("torch")
    tf = torch.nn.functional
    _, _, _, _, _, _, st, pad, dil, groups = case
    x, w, b, rng = _data(case, np.float32, seed=5)
    xt, wt, bt = (torch.tensor(a, requires_grad=True) for a in (x, w, b))
    yt = tf.conv2d(xt, wt, bt, st, pad, dil, groups)
    gy = rng.standard_normal(tuple(yt.shape)).astype(np.float32)
    yt.backward(torch.tensor(gy))
    y = F.conv2d(x, w, b, st, pad, dil, groups)
    gx, gw, gb = F.conv2d_backward(gy, x, w, st, pad, dil, groups)
    np.testing.assert_allclose(y, yt.detach().numpy(), rtol=1e-4, atol=1e-4)
    for ours, theirs in ((gx, xt.grad), (gw, wt.grad), (gb, bt.grad)):
        np.testing.assert_allclose(ours, theirs.numpy(), rtol=1e-4, atol=1e-3)
    # torch tensors in, torch tensors out
    yt2 = F.conv2d(torch.tensor(x), torch.tensor(w), torch.tensor(b), st, pad, dil, groups)
    assert isinstance(yt2, torch.Tensor)
    np.testing.assert_allclose(yt2.numpy(), y, rtol=1e-6)


def test_conv2d_padding_same_valid():
    x, w, b, _ = _data((2, 3, 7, 6, 4, (3, 5), (1, 1), (0, 0), (1, 1), 1), np.float64)
    ref, _ = conv2d_ref(x, w, b, (1, 1), (1, 2), (1, 1), 1)
    np.testing.assert_allclose(F.conv2d(x, w, b, padding="same"), ref, rtol=1e-12)
    ref, _ = conv2d_ref(x, w, b, (1, 1), (0, 0), (1, 1), 1)
    np.testing.assert_allclose(F.conv2d(x, w, b, padding="valid"), ref, rtol=1e-12)


def test_conv2d_bad_inputs():
    x = np.zeros((2, 4, 8, 8), np.float32)
    w = np.zeros((6, 2, 3, 3), np.float32)
    with pytest.raises(ValueError, match="in_channels"):
        F.conv2d(x, w, groups=3)
    with pytest.raises(ValueError, match="expects 8 input channels"):
        F.conv2d(x, np.zeros((6, 4, 3, 3), np.float32), groups=2)
    with pytest.raises(ValueError, match="4-D input"):
        F.conv2d(x[0], w, groups=2)
    with pytest.raises(TypeError, match="dtype"):
        F.conv2d(x, w.astype(np.float64), groups=2)
    with pytest.raises(TypeError, match="expected an array"):
        F.conv2d(x, w.tolist(), groups=2)
    with pytest.raises(TypeError, match="float32 or float64|dtype"):
        F.conv2d(x.astype(np.int32), w, groups=2)
    with pytest.raises(ValueError, match="smaller than the"):
        F.conv2d(x, np.zeros((6, 2, 9, 9), np.float32), groups=2)
    with pytest.raises(ValueError, match="bias: expected shape"):
        F.conv2d(x, w, np.zeros(5, np.float32), groups=2)
    with pytest.raises(ValueError, match="stride"):
        F.conv2d(x, w, stride=0, groups=2)
    with pytest.raises(ValueError, match="out: expected shape"):
        F.conv2d(x, w, groups=2, out=np.zeros((2, 6, 7, 7), np.float32))
    with pytest.raises(ValueError, match="read-only"):
        out = np.zeros((2, 6, 6, 6), np.float32)
        out.flags.writeable = False
        F.conv2d(x, w, groups=2, out=out)
    with pytest.raises(ValueError, match="contiguous"):
        F.conv2d(np.zeros((2, 4, 8, 16), np.float32)[..., ::2], w, groups=2)
    with pytest.raises(ValueError, match="shares memory"):
        buf = np.zeros(2 * 4 * 8 * 8, np.float32)  # out overlaps x
        F.conv2d(buf.reshape(2, 4, 8, 8), w, groups=2, out=buf[:2 * 6 * 6 * 6].reshape(2, 6, 6, 6))
    with pytest.raises(ValueError, match="activation"):
        F.conv2d(x, w, groups=2, activation="gelu")
    with pytest.raises(ValueError, match="grad_output: expected shape"):
        F.conv2d_backward(np.zeros((2, 6, 5, 5), np.float32), x, w, groups=2)
    with pytest.raises(ValueError, match="needs the forward output"):
        F.conv2d_backward(np.zeros((2, 6, 6, 6), np.float32), x, w, groups=2, activation="relu")
    with pytest.raises(TypeError, match="groups"):
        F.conv2d(x, w, groups=2.0)
    with pytest.raises(TypeError, match="stride"):
        F.conv2d(x, w, stride=(1, 2, 3), groups=2)


# Direct forward kernel (stride 1, dilation 1, Cg*R*S <= 320, chunks wasting at most a
# quarter of the output row): odd widths (a partial last chunk), padding 0/1/2, C = 1
# and 3, kernels 3 / 5 (unrolled) and 4 (generic), channel blocks of 4 with a partial
# last block and of 3 (K = 6), groups, and a 288-tap reduction.
DIRECT = [
    (2, 3, 7, 31, 5, (3, 3), (1, 1), (1, 1), (1, 1), 1),    # OW 31, K 5: blocks 4 + 1
    (2, 1, 6, 33, 6, (5, 5), (1, 1), (0, 0), (1, 1), 1),    # grey, 5x5, pad 0, OW 29, blocks of 3
    (2, 3, 5, 27, 4, (5, 5), (1, 1), (2, 2), (1, 1), 1),    # pad 2, OW 27
    (1, 3, 4, 29, 8, (3, 3), (1, 1), (0, 0), (1, 1), 1),    # pad 0, OW 27
    (3, 4, 6, 29, 6, (3, 5), (1, 1), (1, 2), (1, 1), 2),    # groups, 3x5, blocks of 3
    (2, 2, 5, 30, 3, (2, 4), (1, 1), (0, 1), (1, 1), 1),    # generic tap loop (S = 4), OW 29
    (2, 32, 5, 32, 4, (3, 3), (1, 1), (1, 1), (1, 1), 1),   # 288 taps
]


@pytest.mark.parametrize("case", DIRECT)
def test_conv2d_direct_every_isa(case, isa):
    _assert_paths(case, forward="direct")
    _check(case, np.float32)
    _check(case, np.float32, "relu")


@pytest.mark.parametrize("case", DIRECT)
@pytest.mark.parametrize("activation", [None, "sigmoid"])
def test_conv2d_direct_float64(case, activation):
    _check(case, np.float64, activation)


@pytest.mark.parametrize("case", DIRECT[:3])
def test_conv2d_direct_threads_no_bias(case, threads):
    _, _, _, _, _, _, st, pad, dil, groups = case
    x, w, _, _ = _data(case, np.float32)
    ref, _ = conv2d_ref(x, w, None, st, pad, dil, groups)
    np.testing.assert_allclose(F.conv2d(x, w, None, st, pad, dil, groups, activation="tanh"), np.tanh(ref),
                               rtol=2e-4, atol=2e-4)


@pytest.mark.parametrize("case", DIRECT[:2] + [(4, 3, 32, 32, 32, (3, 3), (1, 1), (1, 1), (1, 1), 1)])
def test_conv2d_direct_vs_torch(case):
    torch = pytest.importorskip("torch")
    _, _, _, _, _, _, st, pad, dil, groups = case
    x, w, b, _ = _data(case, np.float32, seed=3)
    yt = torch.nn.functional.conv2d(*(torch.tensor(a) for a in (x, w, b)), st, pad, dil, groups)
    np.testing.assert_allclose(F.conv2d(x, w, b, st, pad, dil, groups, activation="relu"),
                               torch.relu(yt).numpy(), rtol=1e-4, atol=1e-4)


# Weight gradient with vectors along the output channels (when >= 3/4 of the lanes hold a
# channel: K >= 12 at AVX-512, >= 6 at AVX2): one vector, a partial last vector, blocks of 4
# vectors with remainders of 1 / 2 / 3, strides, dilation, groups, 5x5 (50 taps: a partial
# last tap tile), and an image of several pixel chunks.
CV_DW = [
    (2, 3, 9, 10, 16, (3, 3), (1, 1), (1, 1), (1, 1), 1),
    (3, 5, 11, 9, 28, (3, 3), (2, 2), (1, 1), (1, 1), 1),
    (2, 4, 10, 12, 80, (3, 2), (1, 2), (0, 1), (2, 1), 1),
    (2, 3, 8, 8, 48, (3, 3), (2, 2), (1, 1), (1, 1), 1),
    (2, 2, 9, 7, 96, (3, 3), (1, 1), (1, 1), (1, 1), 1),
    (2, 6, 9, 9, 112, (3, 3), (2, 1), (1, 1), (1, 1), 2),
    (2, 2, 7, 8, 56, (5, 5), (1, 1), (2, 2), (1, 1), 1),
    (1, 3, 40, 40, 24, (3, 3), (1, 1), (1, 1), (1, 1), 1),
]


@pytest.mark.parametrize("case", CV_DW)
def test_conv2d_channel_vector_dw_every_isa(case, isa):
    _assert_paths(case, weight_grad="channel_vector")
    _check(case, np.float32)
    _check(case, np.float32, "relu")


@pytest.mark.parametrize("case", CV_DW)
def test_conv2d_channel_vector_dw_float64(case):
    _check(case, np.float64, "tanh")


@pytest.mark.parametrize("case", CV_DW[:3] + CV_DW[-1:])
def test_conv2d_channel_vector_dw_threads(case, threads):
    _check(case, np.float32)


# Forward with vectors along the output channels (strided / small-image shapes with
# K >= 12 at AVX-512, >= 6 at AVX2; CV_DW above runs it too): several pixel chunks per
# image (1200 outputs of 128 channels), no bias, 1x1 stride 2, every activation, two tap blocks.
CV_FWD = [
    (1, 2, 60, 80, 128, (3, 3), (2, 2), (1, 1), (1, 1), 1),
    (3, 8, 9, 9, 32, (1, 1), (2, 2), (0, 0), (1, 1), 1),
    (2, 6, 14, 14, 16, (5, 5), (1, 1), (0, 0), (1, 1), 1),   # LeNet's second layer
    (3, 16, 8, 8, 16, (3, 3), (1, 1), (1, 1), (1, 1), 1),    # 8x8 images (the input gradient too) (*)
    (2, 20, 11, 9, 24, (5, 3), (1, 1), (2, 0), (1, 1), 1),   # input gradient: partial vector, pad 0 (*)
    (1, 460, 5, 6, 16, (3, 3), (2, 2), (1, 1), (1, 1), 1),   # 4140 taps: two tap blocks
]
# (*) the scalar build's 4-wide chunks fill these rows: its direct kernel takes the forward
CV_FWD_DIRECT_AT_SCALAR = CV_FWD[3:5]


@pytest.mark.parametrize("case", CV_FWD)
def test_conv2d_channel_vector_fwd_every_isa(case, isa):
    _assert_paths(case, forward="direct" if isa == "scalar" and case in CV_FWD_DIRECT_AT_SCALAR else "channel_vector")
    _check(case, np.float32, "relu")
    _, _, _, _, _, _, st, pad, dil, groups = case
    x, w, _, _ = _data(case, np.float32)
    ref, _ = conv2d_ref(x, w, None, st, pad, dil, groups)
    np.testing.assert_allclose(F.conv2d(x, w, None, st, pad, dil, groups), ref, rtol=2e-4, atol=2e-4)


@pytest.mark.parametrize("case", CV_FWD)
@pytest.mark.parametrize("activation", [None, "sigmoid"])
def test_conv2d_channel_vector_fwd_float64(case, activation):
    _check(case, np.float64, activation)


@pytest.mark.parametrize("case", CV_FWD[:2])
def test_conv2d_channel_vector_fwd_threads(case, threads):
    _check(case, np.float32, "tanh")


# Input gradient of strided convolutions by stride phases (channel-vector kernel over the input
# channels, when >= 3/4 of the lanes hold one): strides 2 / 3 / (2, 3), kernels 2..5 (a 2x2 kernel
# at stride 3 leaves phases no tap reaches), padding up to 3, groups, partial and 4 + 1 vector blocks.
STRIDED_DX = [
    (2, 16, 9, 10, 8, (3, 3), (2, 2), (1, 1), (1, 1), 1),
    (2, 24, 11, 8, 6, (5, 5), (2, 3), (2, 1), (1, 1), 1),
    (3, 16, 8, 8, 12, (2, 2), (3, 3), (0, 0), (1, 1), 1),   # phase 2 of stride 3 gets no tap of 2
    (2, 32, 7, 9, 8, (3, 2), (3, 2), (0, 1), (1, 1), 2),
    (1, 80, 6, 6, 4, (3, 3), (2, 2), (1, 1), (1, 1), 1),
    (2, 12, 10, 10, 5, (4, 4), (2, 2), (3, 3), (1, 1), 1),
    (2, 64, 16, 16, 32, (3, 3), (2, 2), (1, 1), (1, 1), 1),  # the 16x16 -> 8x8 layer's shape
    (1, 128, 46, 47, 8, (3, 3), (2, 2), (1, 1), (1, 1), 1),  # phases of > 504 pixels: rows split by chunks
]


@pytest.mark.parametrize("case", STRIDED_DX)
def test_conv2d_strided_input_grad_every_isa(case, isa):
    _assert_paths(case, input_grad="channel_vector")
    _check(case, np.float32)
    _check(case, np.float32, "relu")


@pytest.mark.parametrize("case", STRIDED_DX)
def test_conv2d_strided_input_grad_float64(case):
    _check(case, np.float64, "sigmoid")


@pytest.mark.parametrize("case", STRIDED_DX[:3])
def test_conv2d_strided_input_grad_threads(case, threads):
    _check(case, np.float32)


# ---- the path choice ---------------------------------------------------------------------------
ALL_CASES = CASES + RANDOM + MULTI_IMAGE + DIRECT + CV_DW + CV_FWD + STRIDED_DX


def test_conv2d_every_path_every_isa(isa):
    """The shapes above (each run against the reference at every ISA) take every path of every pass."""
    seen = {p: set() for p in PASSES}
    for case in ALL_CASES:
        for p, name in _paths(case).items():
            assert name in PATHS
            seen[p].add(name)
    assert seen == {p: PATHS for p in PASSES}, f"at {isa}: {seen}"


def test_conv2d_paths_follow_isa_and_dtype():
    # K = 12: >= 3/4 of the lanes of a 16-wide float32 vector (AVX-512), and of 8-wide (AVX2)
    case = (2, 8, 12, 12, 12, (3, 3), (2, 2), (1, 1), (1, 1), 1)
    assert _paths(case)["forward"] == "channel_vector"
    # 5 output channels fill 5/8 of an AVX2 / 5/16 of an AVX-512 float32 vector: im2col there
    few = (2, 16, 12, 12, 5, (3, 3), (2, 2), (1, 1), (1, 1), 1)  # 16 input channels: phases for dx
    before = fl.get_isa()
    try:
        for isa in ("avx2", "avx512"):
            if isa in fl._C.available_isas():
                fl.set_isa(isa)
                assert _paths(few) == {"forward": "im2col", "input_grad": "channel_vector", "weight_grad": "im2col"}
    finally:
        fl.set_isa(before)
    assert set(_paths(case, "float64").values()) <= PATHS


def test_conv2d_paths_bad_inputs():
    with pytest.raises(ValueError, match="padding: must be >= 0"):
        F.conv2d_paths((1, 3, 8, 8), (4, 3, 3, 3), padding=-1)
    with pytest.raises(ValueError, match="stride: must be >= 1"):
        F.conv2d_paths((1, 3, 8, 8), (4, 3, 3, 3), stride=0)
    with pytest.raises(ValueError, match="dilation: must be >= 1"):
        F.conv2d_paths((1, 3, 8, 8), (4, 3, 3, 3), dilation=(1, 0))
    with pytest.raises(ValueError, match="divisible by groups"):
        F.conv2d_paths((1, 4, 8, 8), (6, 2, 3, 3), groups=3)
    with pytest.raises(ValueError, match="expects 8 input channels"):
        F.conv2d_paths((1, 4, 8, 8), (6, 4, 3, 3), groups=2)
    with pytest.raises(ValueError, match="smaller than the"):
        F.conv2d_paths((1, 3, 2, 2), (4, 3, 3, 3))
    with pytest.raises(TypeError, match="dtype"):
        F.conv2d_paths((1, 3, 8, 8), (4, 3, 3, 3), dtype="int32")


@pytest.mark.parametrize("bad, match", [
    (dict(padding=-1), "padding: must be >= 0"), (dict(padding=(0, -2)), "padding: must be >= 0"),
    (dict(stride=0), "stride: must be >= 1"), (dict(stride=(1, -1)), "stride: must be >= 1"),
    (dict(dilation=0), "dilation: must be >= 1"), (dict(dilation=(-1, 1)), "dilation: must be >= 1"),
])
def test_conv2d_bad_geometry(bad, match):
    with pytest.raises(ValueError, match=match):
        fl.nn.Conv2d(3, 4, 3, **bad)
    x, w = np.zeros((1, 3, 8, 8), np.float32), np.zeros((4, 3, 3, 3), np.float32)
    with pytest.raises(ValueError, match=match):
        F.conv2d(x, w, **bad)
    with pytest.raises(ValueError, match=match):
        F.conv2d_backward(np.zeros((1, 4, 6, 6), np.float32), x, w, **bad)


def test_conv2d_groups_must_divide_channels():
    with pytest.raises(ValueError, match="in_channels must be divisible by groups"):
        fl.nn.Conv2d(4, 6, 3, groups=3)
    with pytest.raises(ValueError, match="out_channels must be divisible by groups"):
        fl.nn.Conv2d(4, 6, 3, groups=4)
    with pytest.raises(ValueError, match=r"out_channels \(6\) must be divisible by groups \(4\)"):
        F.conv2d(np.zeros((1, 4, 8, 8), np.float32), np.zeros((6, 1, 3, 3), np.float32), groups=4)


# ---- every path applies its activation through kernels/fast_math.h -----------------------------
# For each forward path (at this ISA): act(conv) from the fused kernel equals, bit for bit, the
# shared fast-math activation (fl._C.conv_activation_) applied to the same path's identity
# output.  A path that rounded tanh / sigmoid its own way (libm, the GEMM's epilogue) fails.
ACT_CASES = [CASES[2], CASES[4], CASES[-1], MULTI_IMAGE[0], DIRECT[0], DIRECT[2], CV_FWD[0], CV_FWD[3],
             CV_DW[1], CASES[6],
             (2, 3, 9, 9, 1, (3, 3), (2, 2), (1, 1), (1, 1), 1)]  # one output channel: im2col even for 2-wide float64


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("activation", ["relu", "tanh", "sigmoid"])
def test_conv2d_activation_same_on_every_path(activation, dtype, isa):
    seen = set()
    for case in ACT_CASES:
        seen.add(_paths(case, np.dtype(dtype).name)["forward"])
        _, _, _, _, _, _, st, pad, dil, groups = case
        x, w, b, _ = _data(case, dtype, seed=5)
        x *= 2  # pre-activations over [-10, 10]: both tails of tanh / sigmoid
        pre = F.conv2d(x, w, b, st, pad, dil, groups)
        y = F.conv2d(x, w, b, st, pad, dil, groups, activation=activation)
        ref = pre.copy()
        fl._C.conv_activation_(ref, activation)
        np.testing.assert_array_equal(y, ref, err_msg=f"{case}: {_paths(case)['forward']} at {isa}")
        tol = 1e-6 if dtype == np.float32 else 1e-13
        exact = {"relu": np.maximum(pre, 0), "tanh": np.tanh(pre), "sigmoid": 1 / (1 + np.exp(-pre.astype(np.float64)))}[activation]
        np.testing.assert_allclose(y, exact, rtol=0, atol=tol)
    assert seen == PATHS, f"at {isa}: {seen}"


def test_conv_activation_hook_is_fast_math():
    # float32 tanh / sigmoid are the fast-math polynomial (not libm): within 1e-6 everywhere
    x = np.linspace(-12, 12, 10001, dtype=np.float32)
    for name, f in (("tanh", np.tanh), ("sigmoid", lambda v: 1 / (1 + np.exp(-v.astype(np.float64))))):
        y = x.copy()
        fl._C.conv_activation_(y, name)
        np.testing.assert_allclose(y, f(x), rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="activation"):
        fl._C.conv_activation_(x.copy(), "gelu")
