"""Every fused rule, at every instruction set, against the float64 numpy
reference (optim_reference.py): 50 steps on random data, odd sizes and many
tensors in one call."""
import numpy as np
import pytest

import fusedlearn as fl
from fusedlearn import functional as F

import optim_reference as ref

# (rule id, kernel, state names in the kernel's argument order, hyper, reference)
CASES = [
    ("sgd", F.sgd_, [], dict(lr=0.05), ref.sgd),
    ("sgd_mom", F.sgd_, ["momentum_buffer"], dict(lr=0.05, momentum=0.9, dampening=0.1, weight_decay=1e-2), ref.sgd),
    ("sgd_nesterov", F.sgd_, ["momentum_buffer"], dict(lr=0.05, momentum=0.9, nesterov=True, maximize=True), ref.sgd),
    ("adagrad", F.adagrad_, ["sum"], dict(lr=0.05, lr_decay=1e-2, weight_decay=1e-2, eps=1e-10), ref.adagrad),
    ("adadelta", F.adadelta_, ["square_avg", "acc_delta"], dict(lr=1.0, rho=0.9, eps=1e-6, weight_decay=1e-3),
     ref.adadelta),
    ("rmsprop", F.rmsprop_, ["square_avg"], dict(lr=1e-2, alpha=0.99, eps=1e-8), ref.rmsprop),
    ("rmsprop_full", F.rmsprop_, ["square_avg", "momentum_buffer", "grad_avg"],
     dict(lr=1e-3, alpha=0.9, eps=1e-6, weight_decay=1e-2, momentum=0.5, centered=True, maximize=True), ref.rmsprop),
    ("adam", F.adam_, ["exp_avg", "exp_avg_sq"], dict(lr=1e-2, beta1=0.9, beta2=0.999, eps=1e-8), ref.adam),
    ("adam_ams", F.adam_, ["exp_avg", "exp_avg_sq", "max_exp_avg_sq"],
     dict(lr=1e-2, beta1=0.8, beta2=0.99, eps=1e-6, weight_decay=1e-2, amsgrad=True, maximize=True), ref.adam),
    ("adamw", F.adamw_, ["exp_avg", "exp_avg_sq"], dict(lr=1e-2, weight_decay=0.1), ref.adamw),
    ("adamw_ams", F.adamw_, ["exp_avg", "exp_avg_sq", "max_exp_avg_sq"],
     dict(lr=1e-2, weight_decay=0.1, amsgrad=True), ref.adamw),
    ("adamax", F.adamax_, ["exp_avg", "exp_inf"], dict(lr=2e-3, beta1=0.9, beta2=0.999, weight_decay=1e-2),
     ref.adamax),
    ("accsgd", F.accsgd_, ["momentum_buffer"], dict(lr=1e-2, kappa=1000.0, xi=10.0, small_const=0.7), ref.accsgd),
    ("accsgd_wd", F.accsgd_, ["momentum_buffer"],
     dict(lr=1e-2, kappa=100.0, xi=5.0, small_const=0.5, weight_decay=1e-2, maximize=True), ref.accsgd),
    ("sdprop", F.sdprop_, ["exp_avg", "exp_var"], dict(lr=1e-3, gamma=0.99, eps=1e-8), ref.sdprop),
    ("sdprop_wd", F.sdprop_, ["exp_avg", "exp_var"], dict(lr=1e-2, gamma=0.9, eps=1e-6, weight_decay=1e-2),
     ref.sdprop),
]
IDS = [c[0] for c in CASES]
# states whose kernel buffer is not the reference's variable (AccSGD runs in QHM form)
OPAQUE_STATES = {"accsgd", "accsgd_wd"}


def run_both(case, sizes, dtype, steps, seed=0):
    _, kernel, names, hyper, reference = case
    rng = np.random.default_rng(seed)
    p0 = [rng.standard_normal(n) for n in sizes]
    init = 0.1 if kernel is F.adagrad_ else 0.0
    p = [x.astype(dtype) for x in p0]
    states = [[np.full(n, init, dtype) for n in sizes] for _ in names]
    rp = [x.copy() for x in p0]
    rst = [{k: np.full(n, init) for k in names} for n in sizes]
    for t in range(1, steps + 1):
        g64 = [rng.standard_normal(n) for n in sizes]
        kernel(p, [g.astype(dtype) for g in g64], *states, step=t, **hyper)
        for i in range(len(sizes)):
            rp[i] = reference(rp[i], g64[i], rst[i], t, **hyper)
    return p, states, rp, rst


def assert_matches(case, p, states, rp, rst, rtol, atol):
    for i in range(len(p)):
        np.testing.assert_allclose(p[i], rp[i], rtol=rtol, atol=atol, err_msg=f"{case[0]} params[{i}]")
        if case[0] in OPAQUE_STATES:
            continue
        for k, name in enumerate(case[2]):
            np.testing.assert_allclose(states[k][i], rst[i][name], rtol=rtol, atol=atol,
                                       err_msg=f"{case[0]} {name}[{i}]")


@pytest.mark.parametrize("case", CASES, ids=IDS)
@pytest.mark.parametrize("n", [0, 1, 15, 16, 17, 1000])
def test_rule_float32_matches_reference(isa, case, n):
    p, st, rp, rst = run_both(case, [n], np.float32, 50, seed=n)
    assert_matches(case, p, st, rp, rst, rtol=2e-5, atol=2e-6)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_rule_large_tensor_two_threads(isa, case):
    before = fl.get_num_threads()
    fl.set_num_threads(2)
    try:
        p, st, rp, rst = run_both(case, [1000003], np.float32, 50, seed=7)
    finally:
        fl.set_num_threads(before)
    assert_matches(case, p, st, rp, rst, rtol=2e-5, atol=2e-6)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_rule_many_tensors_in_one_call(isa, case):
    sizes = list(np.random.default_rng(3).integers(0, 300, size=60)) + [1, 0, 33]
    p, st, rp, rst = run_both(case, sizes, np.float32, 50, seed=11)
    assert_matches(case, p, st, rp, rst, rtol=2e-5, atol=2e-6)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_rule_float64_reference_path(case):
    p, st, rp, rst = run_both(case, [1, 17, 300], np.float64, 50, seed=5)
    assert_matches(case, p, st, rp, rst, rtol=1e-11, atol=1e-13)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_isas_agree_on_large_list(case):
    """The SIMD builds and the scalar build give the same numbers (to rounding)."""
    sizes = [1000003, 64, 7]
    out = {}
    for name in fl._C.available_isas():
        before = fl.get_isa()
        fl.set_isa(name)
        try:
            out[name] = run_both(case, sizes, np.float32, 3, seed=2)[0]
        finally:
            fl.set_isa(before)
    base = out["scalar"]
    for name, ps in out.items():
        for a, b in zip(ps, base):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6, err_msg=f"{case[0]} {name} vs scalar")


def test_sdprop_paper_test_vector(isa):
    """docs/math/optimizers.md, SDProp worked example: lr 1e-3, gamma 0.99, eps 1e-8, theta0 0.5, gradients 1, 2, -1."""
    expect = [(0.01, 0.0099, 0.4989949623), (0.0299, 0.04900599, 0.4977204855),
              (0.019601, 0.0590168008, 0.4984298961)]
    for dtype, tol in ((np.float64, 1e-10), (np.float32, 1e-6)):
        p, mu, c = np.full(17, 0.5, dtype), np.zeros(17, dtype), np.zeros(17, dtype)
        for t, (g, (emu, ec, ep)) in enumerate(zip([1.0, 2.0, -1.0], expect), start=1):
            F.sdprop_([p], [np.full(17, g, dtype)], [mu], [c], step=t, lr=1e-3, gamma=0.99, eps=1e-8)
            np.testing.assert_allclose(mu, emu, rtol=tol)
            np.testing.assert_allclose(c, ec, rtol=tol)
            np.testing.assert_allclose(p, ep, rtol=tol)


def test_found_inf_skips_step():
    p, g, m, v = np.ones(10, np.float32), np.ones(10, np.float32), np.zeros(10, np.float32), np.zeros(10, np.float32)
    F.adam_([p], [g], [m], [v], step=1, lr=0.1, found_inf=True)
    F.adam_([p], [g], [m], [v], step=1, lr=0.1, found_inf=np.array(1.0))
    assert np.all(p == 1) and np.all(m == 0) and np.all(v == 0)
    F.adam_([p], [g], [m], [v], step=1, lr=0.1, found_inf=False)
    assert np.all(p < 1) and np.all(m > 0)


def test_adam_accepts_torch_tensors_in_place():
    torch = pytest.importorskip("torch")
    p = torch.nn.Parameter(torch.ones(33))
    g, m, v = torch.full((33,), 0.5), torch.zeros(33), torch.zeros(33)
    F.adam_([p], [g], [m], [v], step=1, lr=0.1)  # requires_grad: written through .detach()
    assert torch.allclose(p.detach(), torch.full((33,), 0.9))
    assert torch.allclose(m, torch.full((33,), 0.05))


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_result_independent_of_address(isa, case):
    """The same values at different addresses step to bitwise the same numbers:
    the SIMD builds do a scalar head up to 64-byte alignment, so the split
    between head, vector body and tail moves with the address, and replicas
    (MPI ranks, each with its own allocations) must still agree exactly."""
    _, kernel, names, hyper, _ = case
    n, steps = 700, 3
    rng = np.random.default_rng(4)
    p0 = rng.standard_normal(n).astype(np.float32)
    init = 0.1 if kernel is F.adagrad_ else 0.0
    grads = [rng.standard_normal(n).astype(np.float32) for _ in range(steps)]
    out = []
    for off in range(16):
        # every stream at `off` elements into its own buffer: head length 0..15
        bufs = [np.zeros(n + 16, np.float32) for _ in range(2 + len(names))]
        p, g, *st = [b[off:off + n] for b in bufs]
        p[:] = p0
        for s in st:
            s[:] = init
        for t in range(1, steps + 1):
            g[:] = grads[t - 1]
            kernel([p], [g], *[[s] for s in st], step=t, **hyper)
        out.append([p.copy()] + [s.copy() for s in st])
    for off in range(1, 16):
        for k, (a, b) in enumerate(zip(out[off], out[0])):
            what = "params" if k == 0 else names[k - 1]
            np.testing.assert_array_equal(a, b, err_msg=f"{case[0]} {what}: offset {off} vs 0")
