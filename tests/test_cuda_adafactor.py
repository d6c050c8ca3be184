"""The CUDA Adafactor step against the CPU kernel on copies of the same data:
1-D (full variance) and 2-D to 4-D (factored) tensors, every switch, several
steps, and the same bits run to run.  Skipped unless this build has CUDA and a
GPU is visible (GPU arrays: torch CUDA tensors, else CuPy)."""
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

SHAPES = [(1,), (1000,), (300001,), (5, 9), (33, 1), (1, 700), (3, 4, 6), (2, 3, 5, 4), (64, 1024)]
HYPERS = [
    dict(lr=1e-2, beta2_decay=-0.8, eps2=1e-3, d=1.0),
    dict(lr=0.5, beta2_decay=-0.5, eps2=1e-2, d=2.0, weight_decay=0.05, maximize=True),
    dict(lr=0.02, beta2_decay=0.0, eps2=10.0, d=1e6),
]
TOL = {np.float32: 2e-5, np.float64: 1e-11}


def _dev(a):
    return BK.to_dev(a.ravel()).reshape(a.shape)


def _state(shape, dtype):
    if len(shape) < 2:
        return None, None, np.zeros(shape, dtype)
    return (np.zeros(shape[:-1] + (1,), dtype), np.zeros(shape[:-2] + (1, shape[-1]), dtype), None)


def _run(shape, dtype, hyper, steps, on_gpu, seed=0):
    rng = np.random.default_rng(seed)
    eps1 = float(np.finfo(dtype).eps)
    p = rng.standard_normal(shape).astype(dtype)
    st = _state(shape, dtype)
    if on_gpu:
        p = _dev(p)
        st = tuple(None if s is None else _dev(s) for s in st)
    for t in range(1, steps + 1):
        g = rng.standard_normal(shape).astype(dtype)
        F.adafactor_(p, _dev(g) if on_gpu else g, *st, step=t, eps1=eps1, **hyper)
    if on_gpu:
        BK.sync()
        return [BK.to_np(p)] + [BK.to_np(s) for s in st if s is not None]
    return [p] + [s for s in st if s is not None]


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("hyper", HYPERS, ids=["defaults", "all_switches", "no_clip"])
@pytest.mark.parametrize("shape", SHAPES, ids=[str(s) for s in SHAPES])
def test_adafactor_cuda_matches_cpu(shape, hyper, dtype):
    want = _run(shape, dtype, hyper, 5, on_gpu=False)
    got = _run(shape, dtype, hyper, 5, on_gpu=True)
    for k, (a, b) in enumerate(zip(got, want)):
        np.testing.assert_allclose(a.reshape(b.shape), b, rtol=TOL[dtype], atol=TOL[dtype],
                                   err_msg=f"{shape} array {k}")


def test_adafactor_cuda_same_bits_run_to_run():
    a = _run((257, 513), np.float32, HYPERS[0], 3, on_gpu=True, seed=3)
    b = _run((257, 513), np.float32, HYPERS[0], 3, on_gpu=True, seed=3)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)


def test_adafactor_cuda_state_on_another_device_raises():
    p = _dev(np.zeros((4, 5), np.float32))
    g = _dev(np.ones((4, 5), np.float32))
    with pytest.raises(ValueError, match="row_var and col_var must be on param's device"):
        F.adafactor_(p, g, np.zeros((4, 1), np.float32), np.zeros((1, 5), np.float32), None, step=1, eps1=1e-7)
