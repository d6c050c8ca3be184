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
    for name in ("initial_broadcast", "mlp64_params_vs_1rank", "mlp32_params_vs_1rank", "lstm64_params_vs_1rank",
                 "mlp64_replicas_bitwise", "lstm64_eval_accuracy_exact", "mlp64_eval_loss_rel",
                 "cnn_localbn_replicas_bitwise", "average_buffers_mean", "no_sync_equals_large_batch"):
        assert f"rank1 {name} " in out and f"rank0 {name} " in out


def test_mpi_checkpoint_resume_bitwise(tmp_path):
    out = _run2_fit("resume", tmp_path)
    assert "rank0 ckpt_has_every_rank_rng" in out and "rank1 resume_bitwise" in out


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
