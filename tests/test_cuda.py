"""The CUDA kernels against the CPU kernels on copies of the same data.

Skipped unless this build has CUDA and a GPU is visible.  GPU arrays are
PyTorch CUDA tensors when torch has CUDA, else CuPy arrays; without either
the module is skipped.  Each fused call is one launch; the layouts below reach
every path of it: single tensors of awkward sizes, lists of tensors whose
arrays are 16-byte aligned or not (vector and scalar element loops), and list
lengths that put the metadata table in the small kernel parameter, the large
kernel parameter and the device buffer.
"""
import numpy as np
import pytest

import fusedlearn as fl
from fusedlearn import _C
from fusedlearn import functional as F

import gpu_arrays

if _C.cuda_device_count() == 0:
    pytest.skip("no CUDA device (or a build without CUDA)", allow_module_level=True)


BK = gpu_arrays.backend()
if BK is None:
    pytest.skip("a GPU is present but neither torch (with CUDA) nor cupy is installed", allow_module_level=True)


# (id, kernel, state-list keywords, hyperparameters)
CASES = [
    ("sgd", F.sgd_, [], dict(lr=0.05)),
    ("sgd_momentum", F.sgd_, ["momentum_buffers"], dict(lr=0.05, momentum=0.9, dampening=0.1, weight_decay=1e-2)),
    ("sgd_nesterov", F.sgd_, ["momentum_buffers"], dict(lr=0.05, momentum=0.9, nesterov=True, maximize=True)),
    ("adagrad", F.adagrad_, ["state_sums"], dict(lr=0.05, lr_decay=1e-2, weight_decay=1e-2, eps=1e-10)),
    ("adadelta", F.adadelta_, ["square_avgs", "acc_deltas"], dict(lr=1.0, rho=0.9, eps=1e-6, weight_decay=1e-3)),
    ("rmsprop", F.rmsprop_, ["square_avgs"], dict(lr=1e-2, alpha=0.99, eps=1e-8)),
    ("rmsprop_centered_momentum", F.rmsprop_, ["square_avgs", "momentum_buffers", "grad_avgs"],
     dict(lr=1e-3, alpha=0.9, eps=1e-6, weight_decay=1e-2, momentum=0.5, centered=True, maximize=True)),
    ("adam_amsgrad", F.adam_, ["exp_avgs", "exp_avg_sqs", "max_exp_avg_sqs"],
     dict(lr=1e-2, beta1=0.8, beta2=0.99, eps=1e-6, weight_decay=1e-2, amsgrad=True)),
    ("adamw", F.adamw_, ["exp_avgs", "exp_avg_sqs"], dict(lr=1e-2, weight_decay=0.1)),
    ("adamax", F.adamax_, ["exp_avgs", "exp_infs"], dict(lr=2e-3, beta1=0.9, beta2=0.999, weight_decay=1e-2)),
    ("accsgd", F.accsgd_, ["momentum_buffers"], dict(lr=1e-2, kappa=1000.0, xi=10.0, small_const=0.7)),
    ("sdprop", F.sdprop_, ["exp_avgs", "exp_vars"], dict(lr=1e-3, gamma=0.99, eps=1e-8, weight_decay=1e-2)),
]
IDS = [c[0] for c in CASES]
SIZES = [0, 1, 15, 16, 17, 1000003]
TOL = {np.float32: 1e-5, np.float64: 1e-10}


def _assert_close(got, want, dtype, what):
    scale = float(np.max(np.abs(want))) if want.size else 0.0
    np.testing.assert_allclose(got, want, rtol=TOL[dtype], atol=TOL[dtype] * 0.1 * max(scale, 1e-30),
                               err_msg=what)


def run_pair(case, sizes, dtype, steps, seed=0, offsets="aligned"):
    """Runs `steps` steps of a rule on CPU arrays and on GPU copies; compares all."""
    name, kernel, states, hyper = case
    rng = np.random.default_rng(seed)

    def offs():
        if offsets == "aligned":
            return [0] * len(sizes)
        return [int(o) for o in rng.integers(0, 4, len(sizes))]

    init = 0.1 if kernel is F.adagrad_ else 0.0
    p = [rng.standard_normal(n).astype(dtype) for n in sizes]
    st = {k: [np.full(n, init, dtype) for n in sizes] for k in states}
    p_d = [BK.to_dev(x, o) for x, o in zip(p, offs())]
    st_d = {k: [BK.to_dev(x, o) for x, o in zip(v, offs())] for k, v in st.items()}
    g_offs = offs()
    for t in range(1, steps + 1):
        g = [rng.standard_normal(n).astype(dtype) for n in sizes]
        g_d = [BK.to_dev(x, o) for x, o in zip(g, g_offs)]
        kernel(p, g, step=t, **st, **hyper)
        kernel(p_d, g_d, step=t, **st_d, **hyper)
    BK.sync()
    for i in range(len(sizes)):
        _assert_close(BK.to_np(p_d[i]), p[i], dtype, f"{name} params[{i}] (n={sizes[i]})")
        for k in states:
            _assert_close(BK.to_np(st_d[k][i]), st[k][i], dtype, f"{name} {k}[{i}] (n={sizes[i]})")


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_rule_single_tensor(case, n, dtype):
    run_pair(case, [n], dtype, steps=20, seed=n)


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_rule_all_sizes_in_one_list(case, dtype):
    run_pair(case, SIZES, dtype, steps=20, seed=1)


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("count", [50, 300], ids=["50_tensors", "300_tensors"])
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_rule_many_tensors_mixed_alignment(case, count, dtype):
    rng = np.random.default_rng(count)
    sizes = [int(s) for s in rng.integers(1, 3000, count)]
    run_pair(case, sizes, dtype, steps=20, seed=count, offsets="mixed")


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_rule_thousands_of_tensors(case):
    # the metadata table no longer fits in kernel parameters: device-buffer path
    rng = np.random.default_rng(5)
    sizes = [int(s) for s in rng.integers(0, 40, 2500)]
    run_pair(case, sizes, np.float32, steps=3, seed=5, offsets="mixed")


# ---- reductions and maps -------------------------------------------------------------
def _layouts(rng):
    many = [int(s) for s in rng.integers(1, 3000, 50)]
    tiny = [int(s) for s in rng.integers(0, 40, 5000)]
    return {
        "sizes": (SIZES, [0] * len(SIZES)),
        "misaligned50": (many, [int(o) for o in rng.integers(0, 4, len(many))]),
        "tiny5000": (tiny, [int(o) for o in rng.integers(0, 4, len(tiny))]),
    }


@pytest.mark.parametrize("layout", ["sizes", "misaligned50", "tiny5000"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
def test_reductions_and_maps_match_cpu(dtype, layout):
    rng = np.random.default_rng(3)
    sizes, offs = _layouts(rng)[layout]
    xs = [(rng.standard_normal(n) * 3).astype(dtype) for n in sizes]
    ds = [BK.to_dev(x, o) for x, o in zip(xs, offs)]

    # the GPU sums exact double squares: as numpy in float64, up to summation order
    exact = sum(float(np.sum(x.astype(np.float64) ** 2)) for x in xs)
    assert F.sum_of_squares(ds) == pytest.approx(exact, rel=1e-12)
    # the CPU's float32 SIMD path sums squares in float blocks first
    assert F.sum_of_squares(ds) == pytest.approx(F.sum_of_squares(xs), rel=1e-5 if dtype == np.float32 else 1e-12)
    assert F.abs_max(ds) == F.abs_max(xs)
    assert F.has_nonfinite(ds) is False

    F.scale_(xs, 0.37)
    F.scale_(ds, 0.37)
    F.clamp_(xs, -0.5, 0.75)
    F.clamp_(ds, -0.5, 0.75)
    BK.sync()
    for i, (x, d) in enumerate(zip(xs, ds)):
        np.testing.assert_array_equal(BK.to_np(d), x, err_msg=f"scale_/clamp_ arrays[{i}]")


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
def test_nonfinite_detection(dtype, bad):
    rng = np.random.default_rng(4)
    xs = [rng.standard_normal(n).astype(dtype) for n in (5, 70000, 33)]
    xs[1][54321] = bad
    ds = [BK.to_dev(x, o) for x, o in zip(xs, (0, 1, 2))]
    assert F.has_nonfinite(ds) is True
    m = F.abs_max(ds)
    if np.isnan(bad):
        assert np.isnan(m)
    else:
        assert m == np.inf
    # clamp keeps NaN and clips +-Inf, as on the CPU
    F.clamp_(xs, -1.0, 1.0)
    F.clamp_(ds, -1.0, 1.0)
    for x, d in zip(xs, ds):
        np.testing.assert_array_equal(BK.to_np(d), x)


def test_empty_lists_and_empty_arrays():
    F.sgd_([], [], lr=0.1)
    assert F.sum_of_squares([]) == 0.0
    e = BK.to_dev(np.zeros(0, np.float32))
    F.adam_([e], [BK.to_dev(np.zeros(0, np.float32))], [BK.to_dev(np.zeros(0, np.float32))],
            [BK.to_dev(np.zeros(0, np.float32))], step=1)
    assert F.sum_of_squares([e]) == 0.0
    assert F.abs_max([e]) == 0.0
    assert F.has_nonfinite([e]) is False


# ---- errors and devices -----------------------------------------------------------------
def test_mixing_cpu_and_cuda_arrays_raises():
    p = BK.to_dev(np.ones(8, np.float32))
    g = np.ones(8, np.float32)
    with pytest.raises(ValueError):
        F.sgd_([p], [g], lr=0.1)
    with pytest.raises(ValueError):
        F.adam_([p], [BK.to_dev(g)], [np.zeros(8, np.float32)], [BK.to_dev(np.zeros(8, np.float32))], step=1)
    with pytest.raises(ValueError):
        F.sum_of_squares([p, g])
    with pytest.raises(ValueError):
        F.scale_([g, p], 2.0)
    np.testing.assert_array_equal(BK.to_np(p), np.ones(8, np.float32))  # untouched


def test_mixed_dtypes_raise():
    p = BK.to_dev(np.ones(8, np.float32))
    with pytest.raises((TypeError, ValueError)):
        F.sgd_([p], [BK.to_dev(np.ones(8, np.float64))], lr=0.1)


def test_build_info_reports_cuda():
    info = fl.build_info()
    assert info["cuda_built"] is True
    assert info["cuda_devices"] == _C.cuda_device_count() >= 1
    assert info["cuda_runtime"]


def test_repeated_steps_reuse_buffers():
    # many calls alternating table sizes (parameter tables and device buffer,
    # growing and shrinking) stay correct
    rng = np.random.default_rng(9)
    for count in (3, 400, 3000, 10, 6000, 2):
        sizes = [int(s) for s in rng.integers(1, 20, count)]
        xs = [rng.standard_normal(n).astype(np.float32) for n in sizes]
        ds = [BK.to_dev(x) for x in xs]
        for _ in range(3):
            F.scale_(xs, 1.5)
            F.scale_(ds, 1.5)
        assert F.sum_of_squares(ds) == pytest.approx(F.sum_of_squares(xs), rel=1e-6)
        for x, d in zip(xs, ds):
            np.testing.assert_array_equal(BK.to_np(d), x)


@pytest.mark.skipif(_C.cuda_device_count() < 2, reason="needs two GPUs")
def test_second_device_and_current_device_restored():
    if BK.name != "torch":
        pytest.skip("device bookkeeping checked through torch")
    torch = BK.torch
    before = torch.cuda.current_device()
    rng = np.random.default_rng(11)
    p = rng.standard_normal(1000).astype(np.float32)
    g = rng.standard_normal(1000).astype(np.float32)
    p_d = BK.to_dev(p, device=1)
    g_d = BK.to_dev(g, device=1)
    F.sgd_([p], [g], lr=0.1)
    F.sgd_([p_d], [g_d], lr=0.1)
    assert torch.cuda.current_device() == before
    np.testing.assert_allclose(BK.to_np(p_d), p, rtol=1e-6)
    assert F.sum_of_squares([p_d]) == pytest.approx(F.sum_of_squares([p]), rel=1e-6)
    with pytest.raises(ValueError):
        F.sgd_([p_d], [BK.to_dev(g, device=0)], lr=0.1)
