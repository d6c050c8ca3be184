"""Run under mpiexec -n 2: reduction="ordered" equals the rank-order sum exactly and is the same
run to run; overlap=True equals the blocking path; check_replicas names a perturbed parameter."""
import sys

import numpy as np

import fusedlearn.distributed as fld
from fusedlearn import nn

comm = fld.init()
fails = []


def mlp(dtype):
    m = nn.Sequential(nn.Linear(5, 9), nn.Tanh(), nn.Linear(9, 8), nn.ReLU(), nn.Linear(8, 3))
    return m.double() if dtype == np.float64 else m.float()


def grads(dp, x, g):
    for p in dp.parameters():
        p.grad = None
    dp.set_batch(len(x), len(x) * comm.size)
    dp(x)
    dp.backward_params(g)
    return [p.grad.copy() for p in dp.parameters()]


for dtype in (np.float64, np.float32):
    base = fld.DataParallel(mlp(dtype)).module  # rank 0's initial weights everywhere
    state = {k: v.copy() for k, v in base.state_dict().items()}
    rng = np.random.default_rng(10 + comm.rank)  # different data on each rank
    x, g = rng.standard_normal((6, 5)).astype(dtype), rng.standard_normal((6, 3)).astype(dtype)
    runs = {}
    for red in ("sum", "ordered"):
        for ov in (False, True):
            m = mlp(dtype)
            m.load_state_dict({k: v.copy() for k, v in state.items()})
            # tiny buckets: several of them, so the overlapped path starts reductions mid-backward
            dp = fld.DataParallel(m, reduction=red, overlap=ov, bucket_cap_mb=1e-4, first_bucket_mb=5e-5)
            if len(dp.buckets) < 3:
                fails.append("expected several buckets")
            runs[red, ov] = [grads(dp, x, g), grads(dp, x, g)]
    # the local scaled gradients of every rank, summed here in rank order in float64
    loc = mlp(dtype)
    loc.load_state_dict({k: v.copy() for k, v in state.items()})
    loc(x)
    loc.backward_params(g)
    w = dtype(1 / comm.size)
    mine = [(p.grad * w).astype(dtype) for p in loc.parameters()]
    every = comm.allgather(mine)
    want = []
    for i in range(len(mine)):
        acc = every[0][i].astype(dtype).copy()
        for r in range(1, comm.size):
            acc += every[r][i]
        want.append(acc)
    for key, (a, b) in runs.items():
        for ga, gb, gw in zip(a, b, want):
            if not np.array_equal(ga, gb):
                fails.append(f"{dtype.__name__} {key}: differs run to run")
            if key[0] == "ordered" and not np.array_equal(ga, gw):
                fails.append(f"{dtype.__name__} {key}: not the rank-order sum")
            tol = 1e-15 if dtype == np.float64 else 1e-6
            if not np.allclose(ga, gw, rtol=tol, atol=tol):
                fails.append(f"{dtype.__name__} {key}: not the sum")
        for ga, gb in zip(runs[key[0], False][0], runs[key[0], True][0]):
            if not np.array_equal(ga, gb):
                fails.append(f"{dtype.__name__} {key}: overlap differs from blocking")
        rep = comm.allgather([ga.tobytes() for ga in a[0]])
        if any(r != rep[0] for r in rep):
            fails.append(f"{dtype.__name__} {key}: replicas differ")

# a rank with no rows joins an overlapped backward (its non-blocking reductions meet the others')
state = {k: v.copy() for k, v in fld.DataParallel(mlp(np.float64)).module.state_dict().items()}
for red in ("sum", "ordered"):
    got = {}
    for ov in (False, True):
        m = mlp(np.float64)
        m.load_state_dict({k: v.copy() for k, v in state.items()})
        dp = fld.DataParallel(m, reduction=red, overlap=ov, bucket_cap_mb=1e-4, first_bucket_mb=5e-5)
        for p in dp.parameters():
            p.grad = None
        x = np.random.default_rng(3).standard_normal((4, 5))
        if comm.rank == 0:
            dp.set_batch(4, 4)
            dp(x)
            dp.backward_params(np.ones((4, 3)))
        else:
            dp.set_batch(0, 4)
            dp.backward_empty()
        got[ov] = [p.grad.copy() for p in dp.parameters()]
    for ga, gb in zip(got[False], got[True]):
        if not np.array_equal(ga, gb):
            fails.append(f"{red}: empty rank under overlap differs from blocking")
    rep = comm.allgather([ga.tobytes() for ga in got[True]])
    if any(r != rep[0] for r in rep):
        fails.append(f"{red}: empty rank under overlap: replicas differ")

# replica drift
m = mlp(np.float64)
dp = fld.DataParallel(m)
dp.check_replicas()  # identical after the wrap broadcast
if comm.rank == 1:
    m[2].weight.data[3, 4] += 1e-12
try:
    dp.check_replicas()
    fails.append("drift not detected")
except fld.ReplicaDriftError as exc:
    if "'2.weight'" not in str(exc) or "rank(s) [1]" not in str(exc):
        fails.append(f"drift message: {exc}")
    print(f"[rank {comm.rank}] DRIFT {exc}")
# check_every: the check runs inside backward
dp2 = fld.DataParallel(mlp(np.float64), check_every=2)
if comm.rank == 1:
    dp2.module[0].bias.data[0] += 1.0
x = np.ones((2, 5))
try:
    for _ in range(2):
        dp2(x)
        dp2.backward(np.ones((2, 3)))
    fails.append("check_every did not detect")
except fld.ReplicaDriftError as exc:
    if "'0.bias'" not in str(exc):
        fails.append(f"check_every message: {exc}")

allf = comm.allgather(fails)
if comm.rank == 0:
    print("FAILS", allf)
sys.exit(0 if not any(allf) else 3)
