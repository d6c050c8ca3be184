"""fl.functional.gemm on CUDA arrays against a float64 matmul of the same data.

Skipped unless this build has CUDA and a GPU is visible, and torch (with
CUDA) or CuPy is installed.  The reference is torch.matmul in float64 on the
GPU (numpy in float64 with CuPy).  The cases reach every variant of the CUDA
kernels: all four transposes, 16-byte aligned and misaligned / odd leading
dimensions (vector and scalar loads and stores), tile edges (primes, sizes
around 128), K = 0, alpha / beta (beta == 0 never reads C), every epilogue
(bias per column / per row, identity / relu / tanh / sigmoid, preact_out),
float32 and float64, plus a 4096 x 4096 x 4096 product.
"""
import math

import numpy as np
import pytest

from fusedlearn import _C
from fusedlearn import functional as F

import gpu_arrays

if _C.cuda_device_count() == 0:
    pytest.skip("no CUDA device (or a build without CUDA)", allow_module_level=True)


BK = gpu_arrays.backend()
if BK is None:
    pytest.skip("a GPU is present but neither torch (with CUDA) nor cupy is installed", allow_module_level=True)

TOL = {np.float32: 2e-6, np.float64: 1e-13}
ACTS = [None, "relu", "tanh", "sigmoid"]


def _act(name, x):
    if name in (None, "identity"):
        return x
    if name == "relu":
        return np.maximum(x, 0.0)
    if name == "tanh":
        return np.tanh(x)
    return 1.0 / (1.0 + np.exp(-x))


def run_case(m, n, k, trans_a=False, trans_b=False, alpha=1.0, beta=0.0, bias_axis=None, activation=None,
             preact=False, dtype=np.float32, layout="aligned", seed=0):
    """One call of F.gemm on CUDA arrays, checked against the float64 reference.

    layout: "aligned" (contiguous, 16-byte aligned), "padded" (leading
    dimensions rounded up past a multiple of 4, still aligned), "odd"
    (odd leading dimensions and starts 1..3 elements into a row: no 16-byte
    access possible)."""
    rng = np.random.default_rng(seed)
    a_st = (k, m) if trans_a else (m, k)
    b_st = (n, k) if trans_b else (k, n)
    a = rng.uniform(-1, 1, a_st).astype(dtype)
    b = rng.uniform(-1, 1, b_st).astype(dtype)
    c = rng.uniform(-1, 1, (m, n)).astype(dtype)
    nb = m if bias_axis == "row" else n
    bias = rng.uniform(-1, 1, nb).astype(dtype)

    def dev(x):
        if layout == "aligned":
            return BK.strided(x)
        if layout == "padded":
            return BK.strided(x, pad=(-x.shape[1]) % 4 + 4)
        return BK.strided(x, pad=int(rng.integers(0, 3)) * 2 + 1, col_off=int(rng.integers(1, 4)))

    ad, bd = dev(a), dev(b)
    out = dev(c)
    if beta == 0:  # C is never read then: NaN in it must not show
        if BK.name == "torch":
            out.fill_(float("nan"))
        else:
            out.fill(np.nan)
    pre = dev(np.zeros((m, n), dtype)) if preact else None
    biasd = None if bias_axis is None else BK.vector(bias, 0 if layout != "odd" else 1)

    kw = dict(trans_a=trans_a, trans_b=trans_b, alpha=alpha, beta=beta, activation=activation, out=out)
    if bias_axis is not None:
        kw.update(bias=biasd, bias_axis=bias_axis)
    if preact:
        kw["preact_out"] = pre
    res = F.gemm(ad, bd, out, **kw)  # c is out: read when beta != 0, then overwritten
    assert res is out

    opa = a.T if trans_a else a
    opb = b.T if trans_b else b
    prod = BK.ref_matmul(opa, opb) if k > 0 else np.zeros((m, n))
    want_pre = alpha * prod
    mag = abs(alpha) * (np.abs(opa.astype(np.float64)) @ np.abs(opb.astype(np.float64)) if k > 0 else np.zeros((m, n)))
    if beta != 0:
        want_pre = want_pre + beta * c.astype(np.float64)
        mag = mag + abs(beta) * np.abs(c.astype(np.float64))
    if bias_axis == "col":
        want_pre = want_pre + bias.astype(np.float64)[None, :]
        mag = mag + np.abs(bias.astype(np.float64))[None, :]
    elif bias_axis == "row":
        want_pre = want_pre + bias.astype(np.float64)[:, None]
        mag = mag + np.abs(bias.astype(np.float64))[:, None]
    lim = TOL[dtype] * (mag + 1.0) * (1.0 + math.sqrt(max(k, 1)))
    got = BK.to_np(out).astype(np.float64)
    what = (f"{np.dtype(dtype).name} M={m} N={n} K={k} trans_a={trans_a} trans_b={trans_b} alpha={alpha} "
            f"beta={beta} bias={bias_axis} act={activation} preact={preact} layout={layout}")
    err = np.abs(got - _act(activation, want_pre))
    assert np.all(err <= lim), f"{what}: max error {np.nanmax(err):.3g} (bound {lim.max():.3g}), " \
                               f"{int(np.sum(~(err <= lim)))} elements off"
    if preact:
        perr = np.abs(BK.to_np(pre).astype(np.float64) - want_pre)
        assert np.all(perr <= lim), f"{what}: preact_out max error {np.nanmax(perr):.3g}"


# shapes: tile edges (128), primes, tiny, K around the 8-deep slices
SHAPES = [
    (1, 1, 1), (1, 7, 3), (5, 1, 9), (4, 4, 4), (7, 13, 5), (8, 8, 8), (17, 31, 23), (64, 64, 64),
    (127, 129, 131), (128, 128, 128), (129, 127, 8), (131, 257, 17), (211, 97, 263), (256, 300, 199),
    (293, 283, 307), (3, 500, 2), (500, 3, 129),
]
TRANS = [(False, False), (False, True), (True, False), (True, True)]
TRANS_IDS = ["nn", "nt", "tn", "tt"]


@pytest.mark.parametrize("layout", ["aligned", "padded", "odd"])
@pytest.mark.parametrize("trans", TRANS, ids=TRANS_IDS)
@pytest.mark.parametrize("shape", SHAPES, ids=[f"{m}x{n}x{k}" for m, n, k in SHAPES])
def test_shapes_transposes_layouts_f32(shape, trans, layout):
    m, n, k = shape
    run_case(m, n, k, *trans, layout=layout, seed=m * 7 + n * 3 + k)


@pytest.mark.parametrize("alpha,beta", [(1.0, 0.0), (0.5, 1.0), (-1.25, -0.5), (0.0, 2.0), (2.0, 1.0)])
@pytest.mark.parametrize("trans", TRANS, ids=TRANS_IDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
def test_alpha_beta(alpha, beta, trans, dtype):
    run_case(131, 67, 45, *trans, alpha=alpha, beta=beta, dtype=dtype, seed=int(10 * alpha + beta + 5))
    run_case(130, 132, 16, *trans, alpha=alpha, beta=beta, dtype=dtype, layout="odd", seed=3)


@pytest.mark.parametrize("preact", [False, True], ids=["no_preact", "preact"])
@pytest.mark.parametrize("activation", ACTS, ids=[str(a) for a in ACTS])
@pytest.mark.parametrize("bias_axis", [None, "col", "row"], ids=["no_bias", "bias_col", "bias_row"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
def test_epilogues(bias_axis, activation, preact, dtype):
    for i, (layout, trans) in enumerate([("aligned", (False, False)), ("padded", (False, True)),
                                         ("odd", (True, False)), ("aligned", (True, True))]):
        run_case(150, 133, 70, *trans, alpha=1.5, beta=0.5 if i % 2 else 0.0, bias_axis=bias_axis,
                 activation=activation, preact=preact, dtype=dtype, layout=layout, seed=i)


@pytest.mark.parametrize("trans", TRANS, ids=TRANS_IDS)
@pytest.mark.parametrize("shape", SHAPES[::2], ids=[f"{m}x{n}x{k}" for m, n, k in SHAPES[::2]])
def test_shapes_f64(shape, trans):
    m, n, k = shape
    run_case(m, n, k, *trans, dtype=np.float64, layout="odd" if m % 2 else "aligned", seed=k)


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
def test_k_zero_is_epilogue_only(dtype):
    # C = act(beta * C + bias); A and B are empty
    run_case(37, 41, 0, beta=0.5, bias_axis="col", activation="tanh", preact=True, dtype=dtype)
    run_case(37, 41, 0, beta=0.0, bias_axis="row", activation="relu", dtype=dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
def test_empty_outputs(dtype):
    for m, n, k in [(0, 5, 3), (5, 0, 3), (0, 0, 0)]:
        run_case(m, n, k, dtype=dtype)


def test_random_random():
    rng = np.random.default_rng(1234)
    for i in range(40):
        m, n, k = (int(x) for x in rng.integers(1, 301, 3))
        ta, tb = (bool(x) for x in rng.integers(0, 2, 2))
        run_case(m, n, k, ta, tb, alpha=float(rng.choice([1.0, -0.5, 2.0])), beta=float(rng.choice([0.0, 1.0, 0.3])),
                 bias_axis=[None, "col", "row"][i % 3], activation=ACTS[i % 4], preact=bool(i % 2),
                 layout=["aligned", "padded", "odd"][i % 3], seed=i)


def test_large_4096_spot_check():
    """4096^3 in float32: sampled rows and columns against float64, and the
    whole matrix against torch's float32 matmul with TF32 off."""
    n = 4096
    rng = np.random.default_rng(7)
    a = rng.uniform(-1, 1, (n, n)).astype(np.float32)
    b = rng.uniform(-1, 1, (n, n)).astype(np.float32)
    bias = rng.uniform(-1, 1, n).astype(np.float32)
    ad, bd = BK.strided(a), BK.strided(b)
    out = BK.strided(np.zeros((n, n), np.float32))
    F.gemm(ad, bd, out, bias=BK.vector(bias), activation="relu", out=out)
    got = BK.to_np(out).astype(np.float64)
    rows = rng.choice(n, 64, replace=False)
    cols = rng.choice(n, 64, replace=False)
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    ref_rows = np.maximum(a64[rows] @ b64 + bias, 0)
    ref_cols = np.maximum(a64 @ b64[:, cols] + bias[cols], 0)
    lim = TOL[np.float32] * (np.abs(a64[rows]) @ np.abs(b64) + 2) * (1 + math.sqrt(n))
    assert np.all(np.abs(got[rows] - ref_rows) <= lim)
    limc = TOL[np.float32] * (np.abs(a64) @ np.abs(b64[:, cols]) + 2) * (1 + math.sqrt(n))
    assert np.all(np.abs(got[:, cols] - ref_cols) <= limc)
    if BK.name == "torch":
        t = BK.torch
        prev = t.backends.cuda.matmul.allow_tf32
        t.backends.cuda.matmul.allow_tf32 = False
        try:
            ref32 = t.relu(t.matmul(ad, bd) + BK.vector(bias)).cpu().numpy().astype(np.float64)
        finally:
            t.backends.cuda.matmul.allow_tf32 = prev
        assert np.max(np.abs(got - ref32)) <= 1e-3 * np.max(np.abs(ref32))


def test_torch_separate_c_and_transposed_flags():
    """torch path of F.gemm with c distinct from a fresh out (the wrapper
    copies c into out); also a sub-matrix slice of a larger tensor."""
    if BK.name != "torch":
        pytest.skip("torch-only wrapper path")
    t = BK.torch
    g = t.Generator(device="cpu").manual_seed(0)
    big = t.rand(300, 400, generator=g, dtype=t.float32).cuda()
    a = big[10:110, 3:203]           # 100 x 200, ld 400, start misaligned
    b = t.rand(150, 200, generator=g).cuda()  # used as b.T
    c = t.rand(100, 150, generator=g).cuda()
    c0 = c.clone()
    res = F.gemm(a, b, c, trans_b=True, alpha=0.5, beta=2.0, activation="sigmoid")
    want = t.sigmoid(0.5 * (a.double() @ b.double().T) + 2.0 * c.double())
    assert res.shape == (100, 150) and res.dtype == t.float32
    assert t.max(t.abs(res.double() - want)).item() < 1e-5
    assert t.equal(c, c0)  # c itself is untouched when out is separate
