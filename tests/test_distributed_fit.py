"""fl.train.fit / evaluate on a DataParallel model: on the local communicator (no MPI needed) and
in 2-rank runs (tests/mpi_scripts/dp_fit.py under ``mpiexec -n 2`` and a hard timeout; every rank
checks, the verdicts are gathered, rank 0 prints them and the exit code says whether all passed)."""
import os
import pickle
import subprocess
import sys

import numpy as np
import pytest

import fusedlearn as fl
import fusedlearn.distributed as fld
from fusedlearn import nn

from test_distributed import _mpiexec

HERE = os.path.dirname(os.path.abspath(__file__))

pytestmark = pytest.mark.usefixtures("one_thread")


def _run2_fit(mode, tmp_path, timeout=90):
    exe = _mpiexec()
    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
               OMPI_MCA_rmaps_base_oversubscribe="1", OMP_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join([os.path.dirname(os.path.dirname(fl.__file__)),
                                           os.environ.get("PYTHONPATH", "")]))
    r = subprocess.run([exe, "-n", "2", sys.executable, os.path.join(HERE, "mpi_scripts", "dp_fit.py"), mode,
                        str(tmp_path)], capture_output=True, text=True, timeout=timeout, env=env)
    assert r.returncode == 0 and "ALL OK" in r.stdout, r.stdout + r.stderr
    return r.stdout


def test_mpi_fit_equals_one_rank_mlp_lstm_eval_bn_no_sync(tmp_path):
    out = _run2_fit("fit", tmp_path)
    for name in ("initial_broadcast", "mlp64_params_vs_1rank", "mlp32_params_vs_1rank", "lstm64_params_vs_1rank", "cnn_syncbn64_params_vs_1rank",
                 "mlp64_replicas_bitwise", "lstm64_eval_accuracy_exact", "mlp64_eval_loss_rel",
                 "cnn_localbn_replicas_bitwise", "adversarial_objective_replicas_bitwise", "average_buffers_mean", "no_sync_equals_large_batch"):
        assert f"rank1 {name} " in out and f"rank0 {name} " in out


def test_mpi_checkpoint_resume_bitwise(tmp_path):
    out = _run2_fit("resume", tmp_path)
    for name in ("rank0 ckpt_has_every_rank_rng", "rank1 resume_bitwise", "rank0 dropout_streams_differ_per_rank",
                 "rank1 history_written_by_rank0_only", "rank0 seed_none_one_batch_order"):
        assert name in out
    # the 2-rank checkpoint refuses a 1-rank resume, with the reason
    m = nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Dropout(0.25), nn.Linear(16, 3)).double()
    dp = fld.DataParallel(m, comm=fld.LocalComm())
    before = [p.data.copy() for p in m.parameters()]
    with pytest.raises(ValueError, match="written by 2 rank.*same number of ranks, not 1"):
        fl.train.fit(dp, nn.CrossEntropyLoss(), fl.optim.Adam(dp.parameters()), _data(21, 6)[:2], epochs=4,
                     batch_size=8, progress=False, checkpoint_path=tmp_path / "part.ckpt", resume=True)
    assert all(np.array_equal(a, p.data) for a, p in zip(before, m.parameters()))  # nothing loaded


# ---- local communicator ------------------------------------------------------------------

def _mlp(seed=0, dropout=0.0):
    g = np.random.default_rng(seed)
    layers = [nn.Linear(6, 12, generator=g), nn.ReLU()]
    if dropout:
        layers.append(nn.Dropout(dropout, seed=3))
    return nn.Sequential(*layers, nn.Linear(12, 3, generator=g)).double()


def _data(n=17, seed=1):
    g = np.random.default_rng(seed)
    return g.standard_normal((n, 6)), g.integers(0, 3, n)


def test_local_dataparallel_fit_is_plain_fit_bitwise(tmp_path):
    train, val = _data(), _data(9, 2)
    ref, m = _mlp(dropout=0.2), _mlp(dropout=0.2)
    h_ref = fl.train.fit(ref, nn.CrossEntropyLoss(), fl.optim.Adam(ref.parameters(), lr=1e-2), train, val,
                         epochs=2, batch_size=8, progress=False)
    dp = fld.DataParallel(m, comm=fld.LocalComm())
    h = fl.train.fit(dp, nn.CrossEntropyLoss(), fl.optim.Adam(dp.parameters(), lr=1e-2), train, val,
                     epochs=2, batch_size=8, progress=False, history_path=tmp_path / "h.json")
    for p, q in zip(m.parameters(), ref.parameters()):
        assert p.data.tobytes() == q.data.tobytes()
    assert h["loss"] == h_ref["loss"] and h["val_accuracy"] == h_ref["val_accuracy"]
    assert (tmp_path / "h.json").exists()
    assert fl.train.evaluate(dp, nn.CrossEntropyLoss(), val) == fl.train.evaluate(ref, nn.CrossEntropyLoss(), val)


def test_sum_loss_uses_sum_scaling():
    train = _data()
    ref, m = _mlp(), _mlp()
    fl.train.fit(ref, nn.CrossEntropyLoss(reduction="sum"), fl.optim.SGD(ref.parameters(), lr=1e-3), train,
                 epochs=1, batch_size=8, progress=False)
    dp = fld.DataParallel(m, comm=fld.LocalComm())
    fl.train.fit(dp, nn.CrossEntropyLoss(reduction="sum"), fl.optim.SGD(dp.parameters(), lr=1e-3), train,
                 epochs=1, batch_size=8, progress=False)
    assert dp._grad_scale == "sum"
    for p, q in zip(m.parameters(), ref.parameters()):
        assert p.data.tobytes() == q.data.tobytes()


def test_resume_with_another_rank_count_is_refused(tmp_path):
    path = tmp_path / "c.ckpt"
    m = _mlp()
    dp = fld.DataParallel(m, comm=fld.LocalComm())
    fl.train.fit(dp, nn.CrossEntropyLoss(), fl.optim.SGD(dp.parameters(), lr=0.1), _data(), epochs=1,
                 batch_size=8, progress=False, checkpoint_path=path)
    ck = fl.load(path)
    assert ck["fit_state"]["ranks"] == 1
    ck["fit_state"]["ranks"] = 2
    with open(path, "wb") as f:
        pickle.dump(ck, f)
    with pytest.raises(ValueError, match="written by 2 rank.*same number of ranks, not 1"):
        fl.train.fit(dp, nn.CrossEntropyLoss(), fl.optim.SGD(dp.parameters(), lr=0.1), _data(), epochs=2,
                     batch_size=8, progress=False, checkpoint_path=path, resume=True)


class _FakeRank(fld.LocalComm):
    """Rank ``r`` of ``size`` whose collectives are the identity (for what needs no peer)."""

    def __init__(self, rank, size):
        self.rank, self.size = rank, size


def test_seed_rank_streams_rank0_unchanged_others_differ():
    a, b, c = _mlp(dropout=0.5), _mlp(dropout=0.5), _mlp(dropout=0.5)
    fld.DataParallel(a, comm=_FakeRank(0, 2)).seed_rank_streams(7)
    fld.DataParallel(b, comm=_FakeRank(1, 2)).seed_rank_streams(7)
    x = np.ones((4, 6))
    assert np.array_equal(a(x), c(x))
    assert not np.array_equal(b(x), c(x))


def test_average_buffers_local_is_identity():
    m = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2)).double()
    m[1].running_mean[:] = [1.5, -2.0]
    fld.DataParallel(m, comm=fld.LocalComm()).average_buffers()
    assert m[1].running_mean.tolist() == [1.5, -2.0]


@pytest.mark.parametrize("activation", [None, "relu"])
@pytest.mark.parametrize("dtype,tol", [(np.float64, 1e-12), (np.float32, 2e-5)])
def test_sync_batchnorm_local_equals_batchnorm(activation, dtype, tol):
    g = np.random.default_rng(0)
    x = (g.standard_normal((5, 3, 4, 4)) * 2 + 1).astype(dtype)
    go = g.standard_normal((5, 3, 4, 4)).astype(dtype)
    ref = nn.BatchNorm2d(3, dtype=dtype, activation=activation)
    ref.weight.data[:] = [0.5, 1.5, -1.0]
    ref.bias.data[:] = [0.1, -0.2, 0.3]
    sbn = nn.SyncBatchNorm2d.convert(nn.Sequential(ref), comm=fld.LocalComm())[0]
    assert isinstance(sbn, nn.SyncBatchNorm2d) and sbn.activation == activation
    ref = nn.BatchNorm2d(3, dtype=dtype, activation=activation)
    ref.load_state_dict({k: np.array(v) for k, v in sbn.state_dict().items()})
    for step in range(2):
        y, yr = sbn(x), ref(x)
        np.testing.assert_allclose(y, yr, rtol=tol, atol=tol)
        for p in (sbn.weight, sbn.bias, ref.weight, ref.bias):
            p.grad = None
        np.testing.assert_allclose(sbn.backward(go), ref.backward(go), rtol=tol, atol=tol)
        np.testing.assert_allclose(sbn.weight.grad, ref.weight.grad, rtol=tol, atol=tol * 10)
        np.testing.assert_allclose(sbn.bias.grad, ref.bias.grad, rtol=tol, atol=tol * 10)
        np.testing.assert_allclose(sbn.running_mean, ref.running_mean, rtol=tol, atol=tol)
        np.testing.assert_allclose(sbn.running_var, ref.running_var, rtol=tol, atol=tol)
        assert sbn.num_batches_tracked == ref.num_batches_tracked
    sbn.eval()
    ref.eval()
    np.testing.assert_allclose(sbn(x), ref(x), rtol=tol, atol=tol)


def test_sync_batchnorm_uneven_shares_equal_concatenated_batch():
    """Two ranks simulated on one process: the statistics and gradients from the (sum, sumsq, rows)
    and (sum g, sum g xhat) reductions equal BatchNorm2d on the concatenation, shares 3 and 1."""
    g = np.random.default_rng(2)
    x, go = g.standard_normal((4, 2, 3, 3)), g.standard_normal((4, 2, 3, 3))
    ref = nn.BatchNorm2d(2, dtype=np.float64)
    yr = ref(x)
    gxr = ref.backward(go / 4)  # a mean loss over the global batch of 4 rows

    class Pair(fld.LocalComm):  # the all-reduce adds the other rank's buffer, fed in order
        def __init__(self, rank):
            self.rank, self.size, self.other = rank, 2, []

        def allreduce_(self, buf):
            buf += self.other.pop(0)
            return buf

    parts = [(slice(0, 3), 3), (slice(3, 4), 1)]
    layers = [nn.SyncBatchNorm2d(2, dtype=np.float64, comm=Pair(r)) for r in range(2)]
    # forward: each rank's (sum, sumsq, count, rows)
    loc = []
    for (sl, k), _ in zip(parts, layers):
        xs = x[sl]
        loc.append(np.concatenate([xs.sum((0, 2, 3)), (xs * xs).sum((0, 2, 3)), [k * 9.0, k]]))
    layers[0].comm.other, layers[1].comm.other = [loc[1]], [loc[0]]
    ys = [layer(x[sl]) for (sl, _), layer in zip(parts, layers)]
    np.testing.assert_allclose(np.concatenate(ys), yr, rtol=0, atol=1e-13)
    # backward: rank r's upstream is its local-mean gradient (go / k); weighted by k / 4
    loc = []
    for (sl, k), layer in zip(parts, layers):
        gk = go[sl]
        xhat = (x[sl] - layer._sync_cache[2].reshape(1, -1, 1, 1)) / np.sqrt(
            layer._sync_cache[3].reshape(1, -1, 1, 1) + layer.eps)
        loc.append(np.concatenate([gk.sum((0, 2, 3)) / 4, (gk * xhat).sum((0, 2, 3)) / 4]))
    layers[0].comm.other, layers[1].comm.other = [loc[1]], [loc[0]]
    gxs = [layer.backward(go[sl] / k) * (k / 4) for (sl, k), layer in zip(parts, layers)]
    np.testing.assert_allclose(np.concatenate(gxs), gxr, rtol=0, atol=1e-13)
    for layer in layers:
        np.testing.assert_allclose(layer.running_mean, ref.running_mean, rtol=0, atol=1e-15)
        np.testing.assert_allclose(layer.running_var, ref.running_var, rtol=0, atol=1e-14)
