"""Bad input raises the stated exception, naming the argument, and never
crashes the interpreter (crash-prone cases run in a subprocess)."""
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from fusedlearn import functional as F


def arrays(n=8, k=4, dtype=np.float32):
    return [np.zeros(n, dtype) for _ in range(k)]


def adam(p, g, m, v, **kw):
    F.adam_(p, g, m, v, step=1, **kw)


def test_non_array_is_type_error():
    _, g, m, v = arrays()
    with pytest.raises(TypeError, match=r"params\[0\].*got str"):
        adam(["nope"], [g], [m], [v])
    with pytest.raises(TypeError, match=r"grads\[0\].*got None"):
        adam([np.zeros(8, np.float32)], [None], [m], [v])


def test_list_expected_not_array():
    p, g, m, v = arrays()
    with pytest.raises(TypeError, match="params: expected a list of arrays"):
        adam(p, [g], [m], [v])


@pytest.mark.parametrize("dtype", [np.int32, np.float16, np.complex64, np.int64])
def test_wrong_dtype_is_type_error(dtype):
    p, g, m, v = arrays()
    with pytest.raises(TypeError, match=r"grads\[0\]: expected a float32"):
        adam([p], [np.zeros(8, dtype)], [m], [v])


def test_mixed_dtype_is_type_error():
    p, g, m, v = arrays()
    with pytest.raises(TypeError, match="one dtype"):
        adam([p], [g], [m.astype(np.float64)], [v])


def test_list_length_mismatch_is_value_error():
    p, g, m, v = arrays()
    with pytest.raises(ValueError, match="exp_avgs has 2 arrays but params has 1"):
        adam([p], [g], [m, m.copy()], [v])


def test_size_mismatch_is_value_error():
    p, g, m, v = arrays()
    with pytest.raises(ValueError, match=r"grads\[0\] has 7 elements but params\[0\] has 8"):
        adam([p], [np.zeros(7, np.float32)], [m], [v])


def test_non_contiguous_target_is_value_error():
    _, g, m, v = arrays()
    p = np.zeros(16, np.float32)[::2]
    with pytest.raises(ValueError, match=r"params\[0\]: array must be contiguous"):
        adam([p], [g], [m], [v])


def test_non_contiguous_grad_is_value_error():
    p, _, m, v = arrays()
    g = np.zeros((8, 2), np.float32)[:, 0]
    with pytest.raises(ValueError, match=r"grads\[0\]: array must be contiguous"):
        adam([p], [g], [m], [v])


def test_read_only_target_is_value_error():
    p, g, m, v = arrays()
    p.setflags(write=False)
    with pytest.raises(ValueError, match=r"params\[0\]: array is read-only"):
        adam([p], [g], [m], [v])
    g.setflags(write=False)  # a read-only gradient is fine
    p2 = np.zeros(8, np.float32)
    adam([p2], [g], [m], [v])


def test_param_aliasing_its_grad_is_value_error():
    p, _, m, v = arrays()
    with pytest.raises(ValueError, match="shares memory"):
        adam([p], [p], [m], [v])


def test_param_aliasing_state_is_value_error():
    p, g, m, _ = arrays()
    with pytest.raises(ValueError, match="shares memory"):
        adam([p], [g], [m], [p])


def test_overlapping_views_are_value_error():
    base = np.zeros(32, np.float32)
    g, m, v = np.zeros(16, np.float32), np.zeros(16, np.float32), np.zeros(16, np.float32)
    m2, v2 = np.zeros(16, np.float32), np.zeros(16, np.float32)
    with pytest.raises(ValueError, match="shares memory"):
        adam([base[:16], base[8:24]], [g, g], [m, m2], [v, v2])


def test_same_param_twice_is_value_error():
    p, g, m, v = arrays()
    with pytest.raises(ValueError, match="shares memory"):
        adam([p, p], [g, g], [m, m.copy()], [v, v.copy()])


def test_shared_read_only_grad_is_allowed():
    p, g, m, v = arrays()
    q, m2, v2 = arrays(k=3)
    adam([p, q], [g, g], [m, m2], [v, v2])


def test_missing_required_state_is_value_error():
    p, g, m, v = arrays()
    with pytest.raises(ValueError, match="max_exp_avg_sqs is required when amsgrad=True"):
        adam([p], [g], [m], [v], amsgrad=True)
    with pytest.raises(ValueError, match="momentum_buffers is required when momentum != 0"):
        F.sgd_([p], [g], step=1, lr=0.1, momentum=0.9)
    with pytest.raises(ValueError, match="grad_avgs is required when centered=True"):
        F.rmsprop_([p], [g], [m], step=1, centered=True)


@pytest.mark.parametrize("kw, msg", [
    (dict(lr=-1.0), "Invalid learning rate"),
    (dict(beta1=1.0), "beta parameter at index 0"),
    (dict(beta2=-0.1), "beta parameter at index 1"),
    (dict(eps=-1e-8), "Invalid epsilon"),
    (dict(weight_decay=-1.0), "Invalid weight_decay"),
])
def test_bad_hyperparameters_are_value_error(kw, msg):
    p, g, m, v = arrays()
    with pytest.raises(ValueError, match=msg):
        adam([p], [g], [m], [v], **kw)


def test_bad_step_is_value_error():
    p, g, m, v = arrays()
    with pytest.raises(ValueError, match="Invalid step"):
        F.adam_([p], [g], [m], [v], step=0)
    with pytest.raises(ValueError, match="Invalid step"):
        F.sdprop_([p], [g], [m], [v], step=-3)


def test_nesterov_needs_momentum():
    p, g, m, _ = arrays()
    with pytest.raises(ValueError, match="Nesterov"):
        F.sgd_([p], [g], [m], step=1, lr=0.1, nesterov=True)


def test_accsgd_hyper_ranges():
    p, g, m, _ = arrays()
    with pytest.raises(ValueError, match="xi"):
        F.accsgd_([p], [g], [m], lr=0.1, kappa=4.0, xi=3.0)
    with pytest.raises(ValueError, match="kappa"):
        F.accsgd_([p], [g], [m], lr=0.1, kappa=0.5, xi=0.5)


def test_error_leaves_arrays_untouched():
    """Validation happens before any write: a bad last tensor changes nothing."""
    p, g, m, v = arrays()
    g[:] = 1
    with pytest.raises(ValueError):
        adam([p, np.zeros(3, np.float32)], [g, np.zeros(4, np.float32)], [m, np.zeros(3, np.float32)],
             [v, np.zeros(3, np.float32)], lr=0.1)
    assert not p.any() and not m.any() and not v.any()


def test_grad_utils_errors():
    with pytest.raises(TypeError):
        F.sum_of_squares([np.zeros(3, np.int64)])
    ro = np.zeros(3, np.float32)
    ro.setflags(write=False)
    with pytest.raises(ValueError, match="read-only"):
        F.scale_([ro], 2.0)
    assert F.sum_of_squares([ro]) == 0.0  # reading a read-only array is fine
    with pytest.raises(ValueError, match="lo <= hi"):
        F.clamp_([np.zeros(3, np.float32)], 1.0, -1.0)


CRASH_PRONE = {
    "huge_ndim_strided": "p = np.lib.stride_tricks.as_strided(np.zeros(4, np.float32), shape=(1<<40,), strides=(0,))\n"
                         "F.adam_([p], [p], [p], [p], step=1)",
    "bytes_object": "F.adam_([b'abcd'], [b'abcd'], [b'abcd'], [b'abcd'], step=1)",
    "memoryview_readonly": "F.adam_([memoryview(b'\\x00'*16).cast('f')], [np.zeros(4, np.float32)], "
                           "[np.zeros(4, np.float32)], [np.zeros(4, np.float32)], step=1)",
    "generator_list": "F.adam_((x for x in [np.zeros(4, np.float32)]), [np.zeros(4, np.float32)], "
                      "[np.zeros(4, np.float32)], [np.zeros(4, np.float32)], step=1)",
    "deleted_during_call": "class A:\n    def __dlpack__(self, *a, **k):\n        raise RuntimeError('boom')\n"
                           "F.adam_([A()], [np.zeros(4, np.float32)], [np.zeros(4, np.float32)], "
                           "[np.zeros(4, np.float32)], step=1)",
}


@pytest.mark.parametrize("name", sorted(CRASH_PRONE))
def test_crash_prone_inputs_raise_cleanly(name):
    code = "import numpy as np\nfrom fusedlearn import functional as F\ntry:\n" + textwrap.indent(
        CRASH_PRONE[name], "    ") + "\nexcept (TypeError, ValueError, RuntimeError) as e:\n    print('RAISED', type(e).__name__, e)\n"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, f"interpreter died ({r.returncode}): {r.stderr[-2000:]}"
    assert "RAISED" in r.stdout, r.stdout + r.stderr
