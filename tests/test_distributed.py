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


def _run2(mode, timeout=45, script="dp_grads.py"):
    exe = _mpiexec()
    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
               OMPI_MCA_rmaps_base_oversubscribe="1", OMP_NUM_THREADS="1",
               # the fusedlearn this test imported (the source tree or the installed one)
               PYTHONPATH=os.pathsep.join([os.path.dirname(os.path.dirname(fl.__file__)),
                                           os.environ.get("PYTHONPATH", "")]))
    return subprocess.run([exe, "-n", "2", sys.executable, os.path.join(HERE, "mpi_scripts", script), mode],
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


class _Fake3(fld.LocalComm):
    """Rank 0 of 3 whose peers contribute fixed rows (the rank-order sum is checked exactly)."""
    size = 3

    def __init__(self, rows):
        self.rows = rows

    def allgather(self, obj):
        return [obj] * 3

    def allgather_(self, buf, out):
        out[0] = buf
        out[1:] = self.rows[: out.shape[0] - 1, : buf.size]
        return out

    def allreduce_(self, buf):
        if buf.size == 1 and buf.dtype == np.float64:  # the row count
            buf *= 3
        return buf


def test_ordered_reduction_sums_in_rank_order_exactly():
    m = nn.Linear(3, 2).float()
    rows = np.array([[1e8] * 8, [-1e8] * 8], np.float32)
    dp = fld.DataParallel(m, comm=_Fake3(rows), reduction="ordered")
    dp.set_batch(1, 1, grad_scale="sum")
    x = np.full((1, 3), 0.5, np.float32)
    dp(x)
    dp.backward(np.full((1, 2), 1.0, np.float32))
    # ((g + 1e8) - 1e8) in float32 loses g = 0.5 / 1.0 differently than g + (1e8 - 1e8)
    want = (np.float32(0.5) + np.float32(1e8)) - np.float32(1e8)
    assert m.weight.grad[0, 0] == want and want != np.float32(0.5)
    with pytest.raises(ValueError, match="reduction must be 'sum' or 'ordered'"):
        fld.DataParallel(m, comm=fld.LocalComm(), reduction="mean")
    with pytest.raises(ValueError, match="check_every"):
        fld.DataParallel(m, comm=fld.LocalComm(), check_every=-1)


def test_overlap_local_equals_blocking():
    def make():
        return nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 2)).double()
    a, b = make(), make()
    b.load_state_dict({k: v.copy() for k, v in a.state_dict().items()})
    da = fld.DataParallel(a, comm=fld.LocalComm(), bucket_cap_mb=1e-4, first_bucket_mb=5e-5)
    db = fld.DataParallel(b, comm=fld.LocalComm(), bucket_cap_mb=1e-4, first_bucket_mb=5e-5, overlap=True)
    assert len(db.buckets) >= 3
    assert sorted(i for v in db._ready_after.values() for i in v) == list(range(len(db.buckets)))
    x, g = np.random.default_rng(0).standard_normal((7, 4)), np.random.default_rng(1).standard_normal((7, 2))
    for d in (da, db):
        d.set_batch(3, 7)
        d(x)
        gin = d.backward(g)
        assert gin.shape == x.shape
    for p, q in zip(a.parameters(), b.parameters()):
        assert np.array_equal(p.grad, q.grad)
        assert any(q.grad.base is bk.buffer for bk in db.buckets)


def test_check_replicas_local_passes():
    dp = fld.DataParallel(nn.Linear(3, 2), comm=fld.LocalComm())
    dp.check_replicas()


def test_nccl_backend_without_cupy_is_a_clear_error(monkeypatch):
    import builtins
    real = builtins.__import__

    def no_cupy(name, *a, **k):
        if name == "cupy" or name.startswith("cupy."):
            raise ImportError("No module named 'cupy'")
        return real(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_cupy)
    monkeypatch.setattr(fld, "_COMM", None)
    with pytest.raises(ImportError, match=r"backend='nccl' needs CuPy"):
        fld.init(backend="nccl")
    assert fld._COMM is None
    with pytest.raises(ValueError, match="backend must be"):
        fld.init(backend="gloo")


def test_mpi_ordered_overlap_and_replica_check():
    r = _run2("all", script="dp_options.py")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "FAILS [[], []]" in r.stdout and "replicas drifted: '2.weight'" in r.stdout


def test_demo_ranks_2_relaunches_under_mpiexec():
    _mpiexec()
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([os.path.dirname(os.path.dirname(fl.__file__)),
                                                       os.environ.get("PYTHONPATH", "")]))
    for k in ("OMPI_ALLOW_RUN_AS_ROOT", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "OMPI_MCA_rmaps_base_oversubscribe"):
        env.pop(k, None)  # the demo sets what the wheel needs itself
    r = subprocess.run([sys.executable, "-m", "fusedlearn.cli", "demo", "--ranks", "2", "--epochs", "2",
                        "--no-progress"], capture_output=True, text=True, timeout=60, env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "data parallel over 2 ranks" in r.stdout and "rows per rank [16, 16]" in r.stdout
    acc = float(r.stdout.split("test accuracy ")[1].split("%")[0])
    assert acc > 70.0


def test_demo_ranks_without_mpi4py_is_a_clear_error(monkeypatch, capsys):
    import builtins
    from fusedlearn import cli
    real = builtins.__import__

    def no_mpi(name, *a, **k):
        if name == "mpi4py" or name.startswith("mpi4py."):
            raise ImportError("No module named 'mpi4py'")
        return real(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_mpi)
    for k in fld._MPI_ENV:
        monkeypatch.delenv(k, raising=False)
    assert cli.main(["demo", "--ranks", "2"]) == 2
    assert "pip install 'fusedlearn[mpi]'" in capsys.readouterr().err


def test_overlap_starts_reductions_during_backward():
    log = []

    class Recording(fld.LocalComm):
        def iallreduce_(self, buf):
            log.append(("start", buf.size))
            return super().iallreduce_(buf)

    m = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 2)).double()
    first = m[0]
    orig = first.backward_params

    def logged(g):
        log.append(("layer0", None))
        return orig(g)

    first.backward_params = logged
    dp = fld.DataParallel(m, comm=Recording(), bucket_cap_mb=1e-4, first_bucket_mb=5e-5, overlap=True)
    dp.set_batch(3, 3)
    dp(np.ones((3, 4)))
    dp.backward_params(np.ones((3, 2)))
    kinds = [k for k, _ in log]
    assert kinds.count("start") == len(dp.buckets)
    assert kinds.index("start") < kinds.index("layer0")  # the last layers' bucket went before layer 0 ran
    assert kinds[-1] == "start" and log[-1][1] == dp.buckets[-1].buffer.size  # layer 0's bucket last


def test_nccl_backend_without_gpu_is_a_clear_error(monkeypatch):
    import types

    def no_device():
        raise OSError("cudaErrorNoDevice: no CUDA-capable device is detected")

    cupy = types.ModuleType("cupy")
    cuda = types.ModuleType("cupy.cuda")
    cuda.nccl = types.ModuleType("cupy.cuda.nccl")
    cuda.runtime = types.SimpleNamespace(getDeviceCount=no_device)
    cupy.cuda = cuda
    monkeypatch.setitem(sys.modules, "cupy", cupy)
    monkeypatch.setitem(sys.modules, "cupy.cuda", cuda)
    monkeypatch.setitem(sys.modules, "cupy.cuda.nccl", cuda.nccl)
    monkeypatch.setattr(fld, "_COMM", None)
    with pytest.raises(RuntimeError, match=r"backend='nccl' needs a CUDA GPU: cudaErrorNoDevice"):
        fld.init(backend="nccl")
    assert fld._COMM is None
