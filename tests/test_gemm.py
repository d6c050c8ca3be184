"""fl.functional.gemm / linear against numpy (computed in float64), at every ISA build."""
import numpy as np
import pytest

import fusedlearn as fl

F = fl.functional

SHAPES = [  # (M, K, N)
    (1, 1, 1), (7, 13, 5), (97, 101, 89), (128, 300, 257), (300, 1, 17), (2, 3, 300), (31, 257, 1),
    (149, 64, 33), (17, 7, 150), (145, 17, 300), (300, 288, 31), (64, 97, 129),
]
ACTS = {
    None: lambda t: t,
    "identity": lambda t: t,
    "relu": lambda t: np.maximum(t, 0),
    "tanh": np.tanh,
    "sigmoid": lambda t: 1 / (1 + np.exp(-t)),
}


def _rand(rng, shape, dtype):
    return rng.standard_normal(shape).astype(dtype)


def _op(x, trans):
    return x.T if trans else x


def _ref(a, b, ta, tb, alpha=1.0, beta=0.0, c=None, bias=None, bias_axis="col", act=None):
    t = alpha * (_op(a, ta).astype(np.float64) @ _op(b, tb).astype(np.float64))
    if beta != 0:
        t = t + beta * c.astype(np.float64)
    if bias is not None:
        bb = bias.astype(np.float64)
        t = t + (bb[None, :] if bias_axis == "col" else bb[:, None])
    return t, ACTS[act](t)


def _tol(dtype, k, scale):
    # inputs are N(0, 1): partial sums reach ~sqrt(K), rounding adds ~sqrt(K) of
    # them, so float32 errors reach ~K * eps (cancellation makes rtol useless)
    if dtype == np.float64:
        return 1e-12 * scale, 1e-12
    return 3e-7 * (k + 1) * scale, 1e-5


def _close(got, want, dtype, k, scale=2.5):
    atol, rtol = _tol(dtype, k, scale)
    np.testing.assert_allclose(np.asarray(got, dtype=np.float64), want, rtol=rtol, atol=atol)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_shapes_and_transposes(isa, dtype):
    rng = np.random.default_rng(1)
    for m, k, n in SHAPES:
        for ta in (False, True):
            for tb in (False, True):
                a = _rand(rng, (k, m) if ta else (m, k), dtype)
                b = _rand(rng, (n, k) if tb else (k, n), dtype)
                out = F.gemm(a, b, trans_a=ta, trans_b=tb)
                assert out.shape == (m, n) and out.dtype == dtype
                _close(out, _ref(a, b, ta, tb)[1], dtype, k)


def test_threads(isa, threads):
    rng = np.random.default_rng(2)
    # (300, 40, 9300): four column blocks of the blocked driver, whose double-buffered packed B
    # is reused twice (a block's packing waits for the rows of the block two back)
    for m, k, n in [(300, 299, 301), (64, 300, 290), (150, 700, 40), (12, 5, 1000), (300, 40, 9300)]:
        a = _rand(rng, (m, k), np.float32)
        b = _rand(rng, (k, n), np.float32)
        bias = _rand(rng, (n,), np.float32)
        out = F.gemm(a, b, bias=bias, activation="relu")
        _close(out, _ref(a, b, False, False, bias=bias, act="relu")[1], np.float32, k)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_strided_submatrices(isa, dtype):
    rng = np.random.default_rng(3)
    for m, k, n in [(7, 13, 5), (97, 101, 89), (150, 40, 33)]:
        for ta in (False, True):
            for tb in (False, True):
                ash = (k, m) if ta else (m, k)
                bsh = (n, k) if tb else (k, n)
                big_a = _rand(rng, (ash[0] + 3, ash[1] + 11), dtype)
                big_b = _rand(rng, (bsh[0] + 2, bsh[1] + 5), dtype)
                a = big_a[2:2 + ash[0], 3:3 + ash[1]]
                b = big_b[1:1 + bsh[0], 4:4 + bsh[1]]
                big_o = np.full((m + 4, n + 7), 1234.0, dtype)
                out = big_o[1:1 + m, 2:2 + n]
                c = big_o.copy()[1:1 + m, 2:2 + n]  # strided c, read with beta
                c[...] = _rand(rng, (m, n), dtype)
                r = F.gemm(a, b, c, trans_a=ta, trans_b=tb, alpha=0.5, beta=-2.0, out=out)
                assert r is out
                _close(out, _ref(a, b, ta, tb, 0.5, -2.0, c)[1], dtype, k)
                # nothing outside the sub-matrix was written
                mask = np.ones(big_o.shape, bool)
                mask[1:1 + m, 2:2 + n] = False
                assert np.all(big_o[mask] == 1234.0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_column_major_views(isa, dtype):
    # x.T of a row-major array (and column-major sub-matrices) are read in
    # place: they flip the transpose flag
    rng = np.random.default_rng(8)
    for m, k, n in [(7, 13, 5), (97, 101, 89), (150, 40, 33)]:
        for ta in (False, True):
            for tb in (False, True):
                ash = (k, m) if ta else (m, k)
                bsh = (n, k) if tb else (k, n)
                a = np.asfortranarray(_rand(rng, (ash[0] + 2, ash[1] + 3), dtype))[1:1 + ash[0], 2:2 + ash[1]]
                b = _rand(rng, (bsh[1], bsh[0]), dtype).T
                out = F.gemm(a, b, trans_a=ta, trans_b=tb)
                _close(out, _ref(a, b, ta, tb)[1], dtype, k)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_alpha_beta(isa, dtype):
    rng = np.random.default_rng(4)
    for m, k, n in [(7, 13, 5), (150, 300, 70), (40, 600, 33)]:  # K > KC: several passes over C
        a = _rand(rng, (m, k), dtype)
        b = _rand(rng, (k, n), dtype)
        c = _rand(rng, (m, n), dtype)
        for alpha, beta in [(1.0, 1.0), (2.5, -0.5), (0.0, 3.0), (-1.0, 0.0)]:
            out = F.gemm(a, b, c, alpha=alpha, beta=beta)
            _close(out, _ref(a, b, False, False, alpha, beta, c)[1], dtype, k)
        # in place: c is out
        c2 = c.copy()
        F.gemm(a, b, c2, beta=1.0, out=c2)
        _close(c2, _ref(a, b, False, False, 1.0, 1.0, c)[1], dtype, k)
        # beta == 0: NaN / Inf in c or out never propagate
        nan = np.full((m, n), np.nan, dtype)
        out = np.full((m, n), np.inf, dtype)
        F.gemm(a, b, nan, beta=0.0, out=out)
        assert np.all(np.isfinite(out))
        _close(out, _ref(a, b, False, False)[1], dtype, k)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("act", list(ACTS))
def test_epilogue(isa, dtype, act):
    rng = np.random.default_rng(5)
    for m, k, n in [(1, 1, 1), (97, 101, 89), (150, 520, 37), (13, 8, 300)]:
        for axis in ("col", "row"):
            a = _rand(rng, (m, k), dtype)
            b = _rand(rng, (n, k), dtype)
            c = _rand(rng, (m, n), dtype)
            bias = _rand(rng, (n if axis == "col" else m,), dtype)
            pre = np.full((m, n), np.nan, dtype)
            out = F.gemm(a, b, c, trans_b=True, alpha=0.7, beta=0.3, bias=bias, bias_axis=axis, activation=act,
                         preact_out=pre)
            t, y = _ref(a, b, False, True, 0.7, 0.3, c, bias, axis, act)
            _close(pre, t, dtype, k)
            _close(out, y, dtype, k)
            # no preact_out, no c
            out2 = F.gemm(a, b, trans_b=True, bias=bias, bias_axis=axis, activation=act)
            _close(out2, _ref(a, b, False, True, bias=bias, bias_axis=axis, act=act)[1], dtype, k)


def test_activation_extremes(isa):
    # saturating inputs: tanh/sigmoid stay finite and exact at the limits
    a = np.array([[1.0], [-1.0], [0.0], [1e-4], [-1e-3], [0.3]], np.float32)
    b = np.array([[100.0, -100.0, 1e-30, 30.0, -90.0, 0.2]], np.float32)
    for act in ("tanh", "sigmoid"):
        out = F.gemm(a, b, activation=act)
        want = ACTS[act](a.astype(np.float64) @ b.astype(np.float64))
        np.testing.assert_allclose(out, want, rtol=2e-6, atol=1e-7)


def test_linear(isa):
    rng = np.random.default_rng(6)
    for dtype in (np.float32, np.float64):
        x = _rand(rng, (33, 20), dtype)
        w = _rand(rng, (7, 20), dtype)
        bias = _rand(rng, (7,), dtype)
        pre = np.empty((33, 7), dtype)
        y = F.linear(x, w, bias, activation="tanh", preact_out=pre)
        t = x.astype(np.float64) @ w.T.astype(np.float64) + bias
        _close(pre, t, dtype, 20)
        _close(y, np.tanh(t), dtype, 20)
        # N-D input: leading dimensions flattened and restored
        x3 = _rand(rng, (4, 5, 20), dtype)
        pre3 = np.empty((4, 5, 7), dtype)
        y3 = F.linear(x3, w, bias, "relu", preact_out=pre3)
        assert y3.shape == (4, 5, 7)
        t3 = x3.astype(np.float64) @ w.T.astype(np.float64) + bias
        _close(y3, np.maximum(t3, 0), dtype, 20)
        _close(pre3, t3, dtype, 20)
        _close(F.linear(x, w), x.astype(np.float64) @ w.T, dtype, 20)


def test_large_spot_check():
    rng = np.random.default_rng(7)
    n = 1024
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    bias = rng.standard_normal(n, dtype=np.float32)
    out = F.gemm(a, b, trans_b=True, bias=bias, activation="relu")
    # spot-check rows and columns spread over every block and thread
    rows = np.r_[0, 1, 143, 144, 511, 512, 513, 1000, 1023]
    t = a[rows].astype(np.float64) @ b.T.astype(np.float64) + bias
    _close(out[rows], np.maximum(t, 0), np.float32, n)
    cols = np.r_[0, 15, 16, 700, 1023]
    t = a.astype(np.float64) @ b[cols].T.astype(np.float64) + bias[cols]
    _close(out[:, cols], np.maximum(t, 0), np.float32, n)


def test_torch_in_torch_out(isa):
    torch = pytest.importorskip("torch")
    g = torch.Generator().manual_seed(0)
    for dtype in (torch.float32, torch.float64):
        a = torch.randn(37, 50, generator=g, dtype=dtype)
        b = torch.randn(29, 50, generator=g, dtype=dtype)
        bias = torch.randn(29, generator=g, dtype=dtype)
        out = F.gemm(a, b, trans_b=True, bias=bias, activation="sigmoid")
        assert isinstance(out, torch.Tensor) and out.dtype == dtype and out.shape == (37, 29)
        tol = dict(rtol=1e-5, atol=1e-5) if dtype == torch.float32 else dict(rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(out, torch.sigmoid(a @ b.T + bias), **tol)
        # strided torch views, out given, requires_grad inputs
        big = torch.randn(40, 60, generator=g, dtype=dtype)
        av = big[2:39, 5:55]
        w = torch.randn(29, 50, generator=g, dtype=dtype, requires_grad=True)
        o = torch.empty(37, 29, dtype=dtype)
        pre = torch.empty(37, 29, dtype=dtype)
        r = F.linear(av, w, bias, "relu", preact_out=pre)
        torch.testing.assert_close(pre, av @ w.detach().T + bias, **tol)
        torch.testing.assert_close(r, torch.relu(pre), **tol)
        r2 = F.gemm(av, w, trans_b=True, out=o)
        assert r2 is o
        torch.testing.assert_close(o, av @ w.detach().T, **tol)
        torch.testing.assert_close(F.gemm(av, w.detach().T), av @ w.detach().T, **tol)  # a transposed view
        # N-D linear
        x3 = torch.randn(3, 4, 50, generator=g, dtype=dtype)
        y3 = F.linear(x3, w, bias)
        assert y3.shape == (3, 4, 29)
        torch.testing.assert_close(y3, x3 @ w.detach().T + bias, **tol)


def test_zero_sizes():
    a = np.ones((0, 5), np.float32)
    b = np.ones((5, 3), np.float32)
    assert F.gemm(a, b).shape == (0, 3)
    a = np.ones((4, 0), np.float32)
    b = np.ones((0, 3), np.float32)
    bias = np.arange(3, dtype=np.float32)
    np.testing.assert_array_equal(F.gemm(a, b, bias=bias), np.tile(bias, (4, 1)))
    c = np.full((4, 3), 2.0, np.float32)
    np.testing.assert_array_equal(F.gemm(a, b, c, beta=1.5), np.full((4, 3), 3.0))


def test_bad_inputs():
    a = np.ones((4, 5), np.float32)
    b = np.ones((5, 3), np.float32)
    with pytest.raises(TypeError, match="a"):
        F.gemm([[1.0]], b)
    with pytest.raises(TypeError, match="float32"):
        F.gemm(a.astype(np.int32), b)
    with pytest.raises(TypeError, match="float64"):
        F.gemm(a, b.astype(np.float64))
    with pytest.raises(ValueError, match=r"\(4, 5\).*\(3, 5\)|\(5, 3\)"):
        F.gemm(a, b, trans_b=True)
    with pytest.raises(ValueError, match=r"op\(a\) is \(4, 5\).*op\(b\) is \(6, 3\)"):
        F.gemm(a, np.ones((6, 3), np.float32))
    with pytest.raises(ValueError, match="2-D"):
        F.gemm(np.ones(5, np.float32), b)
    with pytest.raises(ValueError, match=r"out: expected shape \(4, 3\).*\(3, 4\)"):
        F.gemm(a, b, out=np.empty((3, 4), np.float32))
    with pytest.raises(ValueError, match=r"c: expected shape \(4, 3\)"):
        F.gemm(a, b, np.ones((4, 4), np.float32), beta=1.0)
    with pytest.raises(ValueError, match=r"bias: expected shape \(3,\)"):
        F.gemm(a, b, bias=np.ones(4, np.float32))
    with pytest.raises(ValueError, match=r"bias: expected shape \(4,\)"):
        F.gemm(a, b, bias=np.ones(3, np.float32), bias_axis="row")
    with pytest.raises(ValueError, match="bias_axis"):
        F.gemm(a, b, bias=np.ones(3, np.float32), bias_axis="diag")
    with pytest.raises(ValueError, match="activation"):
        F.gemm(a, b, activation="gelu")
    with pytest.raises(ValueError, match="preact_out"):
        F.gemm(a, b, preact_out=np.empty((4, 4), np.float32))
    with pytest.raises(ValueError, match="beta"):
        F.gemm(a, b, beta=1.0)
    with pytest.raises(ValueError, match="read-only"):
        o = np.empty((4, 3), np.float32)
        o.flags.writeable = False
        F.gemm(a, b, out=o)
    with pytest.raises(ValueError, match="contiguous"):
        F.gemm(a[:, ::2], np.ones((3, 3), np.float32))
    with pytest.raises(ValueError, match="out: rows must be contiguous"):
        F.gemm(a, b, out=np.empty((3, 4), np.float32).T)
    with pytest.raises(ValueError, match="shares memory"):
        sq = np.ones((5, 5), np.float32)
        F.gemm(sq, sq, out=sq)
    with pytest.raises(ValueError, match=r"linear: x has 5 input features"):
        F.linear(a, np.ones((3, 4), np.float32))
    with pytest.raises(ValueError, match="weight"):
        F.linear(a, np.ones(5, np.float32))
