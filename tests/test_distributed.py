"""fusedlearn.distributed: shares, buckets and scaling on the local communicator, and 2-rank MPI
runs (spawned as ``mpiexec -n 2`` under a hard timeout; skipped without mpi4py / mpiexec)."""
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

import fusedlearn as fl
import fusedlearn.distributed as fld
from fusedlearn import nn

HERE = os.path.dirname(os.path.abspath(__file__))


def test_shares_differ_by_at_most_one_and_sum():
    for n in range(0, 20):
        for p in range(1, 6):
            s = fld.shares(n, p)
            assert sum(s) == n and max(s) - min(s) <= 1
            sl = [fld.share(n, r, p) for r in range(p)]
            assert sl[0].start == 0 and sl[-1].stop == n
            assert all(a.stop == b.start for a, b in zip(sl, sl[1:]))
    assert fld.shares(1, 2) == [1, 0]
    with pytest.raises(ValueError, match="rank 2 not in"):
        fld.share(4, 2, 2)
    with pytest.raises(ValueError, match="need n >= 0"):
        fld.shares(-1, 2)


def test_buckets_per_dtype_first_small_and_views():
    ps = [nn.Parameter(np.zeros(300_000, np.float32)) for _ in range(4)]  # 1.14 MiB each
    ps += [nn.Parameter(np.zeros(10, np.float64))]
    b = fld.make_buckets(ps, bucket_cap_mb=3.0)
    dt = [x.dtype for x in b]
    assert dt.count(np.float64) == 1
    f32 = [x for x in b if x.dtype == np.float32]
    assert [len(x.params) for x in f32] == [1, 2, 1]  # first bucket 1 MiB (one oversize param), then 3 MiB
    assert f32[0].params[0] is ps[3]  # reverse order: last parameters first
    for x in b:
        for p, v in zip(x.params, x.views):
            assert v.base is x.buffer and v.shape == p.shape
    with pytest.raises(ValueError, match="bucket_cap_mb"):
        fld.make_buckets(ps, bucket_cap_mb=0)


def test_local_dataparallel_grad_is_bucket_view_and_scaled():
    m = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 2)).double()
    ref = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 2)).double()
    ref.load_state_dict({k: v.copy() for k, v in m.state_dict().items()})
    dp = fld.DataParallel(m, comm=fld.LocalComm())
    x, g = np.random.default_rng(0).standard_normal((9, 4)), np.random.default_rng(1).standard_normal((9, 2))
    dp(x)
    dp.backward(g)
    ref(x)
    ref.backward(g)
    for p, q in zip(m.parameters(), ref.parameters()):
        np.testing.assert_allclose(p.grad, q.grad, rtol=0, atol=1e-14)
        assert any(p.grad.base is b.buffer for b in dp.buckets)
    # as rank 0 of 3 rows out of 9: the local-mean gradient is weighted 3/9
    for p in m.parameters():
        p.grad = None
    dp.set_batch(3, 9)
    dp(x[:3])
    dp.backward(g[:3])
    for p in ref.parameters():
        p.grad = None
    ref(x[:3])
    ref.backward(g[:3])
    for p, q in zip(m.parameters(), ref.parameters()):
        np.testing.assert_allclose(p.grad, q.grad / 3, rtol=1e-13, atol=1e-15)
    with pytest.raises(ValueError, match="grad_scale"):
        dp.set_batch(1, 2, grad_scale="avg")


def test_no_sync_skips_reduction():
    calls = []

    class Counting(fld.LocalComm):
        def allreduce_(self, buf):
            calls.append(buf.size)
            return buf

    m = nn.Linear(3, 2).double()
    dp = fld.DataParallel(m, comm=Counting())
    x = np.ones((2, 3))
    with dp.no_sync():
        dp(x)
        dp.backward(np.ones((2, 2)))
    assert calls == []
    dp.set_batch(2, 2)
    dp(x)
    dp.backward(np.ones((2, 2)))
    assert calls == [8]  # one bucket of 6 + 2 float64, reduced once


def _mpiexec():
    pytest.importorskip("mpi4py")
    exe = shutil.which("mpiexec", path=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))
    if exe is None:
        pytest.skip("mpiexec not found")
    return exe


def _run2(mode, timeout=45):
    exe = _mpiexec()
    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
               OMPI_MCA_rmaps_base_oversubscribe="1", OMP_NUM_THREADS="1",
               # the fusedlearn this test imported (the source tree or the installed one)
               PYTHONPATH=os.pathsep.join([os.path.dirname(os.path.dirname(fl.__file__)),
                                           os.environ.get("PYTHONPATH", "")]))
    return subprocess.run([exe, "-n", "2", sys.executable, os.path.join(HERE, "mpi_scripts", "dp_grads.py"), mode],
                          capture_output=True, text=True, timeout=timeout, env=env)


def test_mpi_two_ranks_grads_equal_one_rank():
    r = _run2("grads")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "MAXERR" in r.stdout


def test_mpi_raising_rank_aborts_job():
    r = _run2("raise")
    assert r.returncode != 0
    assert "rank one failed on purpose" in r.stdout + r.stderr


def test_mpi_mismatched_model_structure_error():
    r = _run2("mismatch")
    assert r.returncode != 0
    assert "StructureMismatchError" in r.stderr + r.stdout and "differs from rank 0" in r.stderr + r.stdout
