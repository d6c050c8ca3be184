"""Run under mpiexec -n 2: DataParallel grads equal the 1-rank full-batch grads (float64)."""
import sys

import numpy as np

import fusedlearn.distributed as fld
from fusedlearn import nn

mode = sys.argv[1]
comm = fld.init()


def mlp(hidden=7):
    return nn.Sequential(nn.Linear(5, hidden), nn.ReLU(), nn.Linear(hidden, 3)).double()


if mode == "mismatch":
    fld.DataParallel(mlp(7 if comm.rank == 0 else 8))
    sys.exit(0)
if mode == "raise" and comm.rank == 1:
    raise RuntimeError("rank one failed on purpose")
m, ref = mlp(), mlp()
dp = fld.DataParallel(m)
ref.load_state_dict({k: v.copy() for k, v in m.state_dict().items()})
rng = np.random.default_rng(1)
bad = 0.0
for n in (11, 1):  # 1 row: rank 1 gets none and still joins the reduction
    x, g = rng.standard_normal((n, 5)), rng.standard_normal((n, 3))
    for p in list(m.parameters()) + list(ref.parameters()):
        p.grad = None
    sl = fld.share(n, comm.rank, comm.size)
    k = sl.stop - sl.start
    dp.set_batch(k, n)
    if k:
        dp(x[sl])
        dp.backward_params(g[sl] / k)
    else:
        dp.backward_empty()
    ref(x)
    ref.backward(g / n)
    for p, q in zip(m.parameters(), ref.parameters()):
        bad = max(bad, float(np.abs(p.grad - q.grad).max()))
        assert any(p.grad.base is b.buffer for b in dp.buckets)
worst = dp.reduce_metrics(bad)[0]
if comm.rank == 0:
    print(f"MAXERR {worst:.3e}")
sys.exit(0 if worst < 1e-12 else 3)
