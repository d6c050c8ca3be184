"""Run under mpiexec -n 2 (or alone, as 1 rank): fl.train.fit on a DataParallel model against the
1-rank fit of the same model on the same data, computed on every rank.

Usage: dp_fit.py MODE OUTDIR.  Every rank checks; the verdicts are gathered so all ranks agree;
rank 0 prints one ``CHECK name value`` line per check and ``ALL OK`` (exit 0) or exits 3.
"""
import os
import sys

import numpy as np

import fusedlearn as fl
import fusedlearn.distributed as fld
from fusedlearn import nn

mode, outdir = sys.argv[1], sys.argv[2]
comm = fld.init()
results = []  # (name, value, ok)


def check(name, value, ok):
    results.append((name, float(value), bool(ok)))


def maxdiff(a_params, b_params):
    return max(float(np.abs(np.asarray(p.data, np.float64) - np.asarray(q.data, np.float64)).max())
               for p, q in zip(a_params, b_params))


def replicas_identical(model):
    blob = b"".join(np.ascontiguousarray(v).tobytes() for v in model.state_dict().values())
    return all(x == blob for x in comm.allgather(blob))


def mlp(dtype, seed=0, dropout=0.0):
    g = np.random.default_rng(seed)
    layers = [nn.Linear(6, 16, generator=g), nn.Tanh()]
    if dropout:
        layers.append(nn.Dropout(dropout, seed=seed + 7))
    layers += [nn.Linear(16, 3, generator=g)]
    m = nn.Sequential(*layers)
    return m.double() if dtype == np.float64 else m


class LastStep(nn.Module):
    """A SequenceModel's output without the state (what fit's loss wants)."""

    def __init__(self, seq):
        super().__init__()
        self.seq = seq

    def forward(self, x):
        return self.seq(x)[0]

    def backward(self, g):
        return self.seq.backward(g)


def lstm(seed=0):
    g = np.random.default_rng(seed)
    m = LastStep(nn.SequenceModel(nn.LSTM(4, 8, batch_first=True, generator=g), nn.Linear(8, 3, generator=g),
                                  return_sequences=False))
    return m.double()


def cnn(seed=0, bn=nn.BatchNorm2d):
    g = np.random.default_rng(seed)
    m = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1, bias=False, generator=g), bn(4), nn.ReLU(), nn.MaxPool2d(2),
                      nn.Flatten(), nn.Linear(4 * 3 * 3, 3, generator=g))
    return m.double()


def data(shape, n, dtype, seed):
    g = np.random.default_rng(seed)
    x = g.standard_normal((n,) + shape).astype(dtype)
    y = g.integers(0, 3, n)
    return x, y


def compare_fit(name, make, shape, dtype, tol, B=8, epochs=2, make_ref=None):
    n = 2 * B + 1  # last batch of 1 row: rank 1's share is empty
    train, val = data(shape, n, dtype, 1), data(shape, 13, dtype, 2)
    ref = (make_ref or make)()
    h_ref = fl.train.fit(ref, nn.CrossEntropyLoss(), fl.optim.Adam(ref.parameters(), lr=1e-2), train, val,
                         epochs=epochs, batch_size=B, progress=False, seed=5)
    m = make()
    dp = fld.DataParallel(m)
    h = fl.train.fit(dp, nn.CrossEntropyLoss(), fl.optim.Adam(dp.parameters(), lr=1e-2), train, val,
                     epochs=epochs, batch_size=B, progress=False, seed=5)
    d = maxdiff(m.parameters(), ref.parameters())
    check(f"{name}_params_vs_1rank", d, d <= tol)
    dl = max(abs(a - b) for a, b in zip(h["loss"] + h["val_loss"], h_ref["loss"] + h_ref["val_loss"]))
    check(f"{name}_history_loss_vs_1rank", dl, dl <= max(tol, 1e-12))
    check(f"{name}_replicas_bitwise", 0, replicas_identical(m))
    # exact evaluation: same weights on both sides (load the DP weights into the reference)
    ref.load_state_dict({k: v.copy() for k, v in m.state_dict().items()})
    e_ref = fl.train.evaluate(ref, nn.CrossEntropyLoss(), val, batch_size=4)
    e = fl.train.evaluate(dp, nn.CrossEntropyLoss(), val, batch_size=4)
    check(f"{name}_eval_accuracy_exact", abs(e["accuracy"] - e_ref["accuracy"]), e["accuracy"] == e_ref["accuracy"])
    rel = abs(e["loss"] - e_ref["loss"]) / abs(e_ref["loss"])
    check(f"{name}_eval_loss_rel", rel, rel <= 1e-15 if dtype == np.float64 else rel <= 1e-6)


if mode == "fit":
    # initial broadcast: rank r builds its model from seed r; after the wrap all equal rank 0's
    m0, mine = mlp(np.float64, seed=0), mlp(np.float64, seed=comm.rank)
    fld.DataParallel(mine)
    check("initial_broadcast", maxdiff(m0.parameters(), mine.parameters()),
          maxdiff(m0.parameters(), mine.parameters()) == 0)
    compare_fit("mlp64", lambda: mlp(np.float64), (6,), np.float64, 1e-12)
    compare_fit("mlp32", lambda: mlp(np.float32), (6,), np.float32, 1e-5)
    compare_fit("lstm64", lstm, (5, 4), np.float64, 1e-12)
    # SyncBatchNorm2d on 2 ranks equals BatchNorm2d on 1 rank (global-batch statistics)
    compare_fit("cnn_syncbn64", lambda: fld.convert_sync_batchnorm(cnn()), (2, 6, 6), np.float64, 1e-12,
                make_ref=cnn)
    # an objective that runs the inner module's backward (AdversarialFeatures): still reduced
    train = data((6,), 17, np.float64, 1)
    ref, m = mlp(np.float64), mlp(np.float64)
    fl.train.fit(ref, nn.CrossEntropyLoss(), fl.optim.SGD(ref.parameters(), lr=0.1), train, epochs=1,
                 batch_size=8, progress=False,
                 objective=fl.train.AdversarialFeatures(ref, eps=0.3, layers=[2], seed=0))
    dp = fld.DataParallel(m)
    fl.train.fit(dp, nn.CrossEntropyLoss(), fl.optim.SGD(dp.parameters(), lr=0.1), train, epochs=1,
                 batch_size=8, progress=False,
                 objective=fl.train.AdversarialFeatures(m, eps=0.3, layers=[2], seed=0))
    check("adversarial_objective_replicas_bitwise", 0, replicas_identical(m))
    # local BatchNorm statistics: replicas stay bit-identical (buffers averaged after each epoch)
    x, y = data((2, 6, 6), 17, np.float64, 3)
    m = cnn()
    dp = fld.DataParallel(m)
    fl.train.fit(dp, nn.CrossEntropyLoss(), fl.optim.SGD(dp.parameters(), lr=0.1), (x, y), (x, y),
                 epochs=2, batch_size=8, progress=False)
    check("cnn_localbn_replicas_bitwise", 0, replicas_identical(m))
    # average_buffers: the mean of the ranks' running statistics
    bn = m[1]
    bn.running_mean[:] = comm.rank + np.arange(4)
    dp.average_buffers()
    want = (comm.size - 1) / 2 + np.arange(4)
    check("average_buffers_mean", np.abs(bn.running_mean - want).max(), np.allclose(bn.running_mean, want, 0, 1e-15))
    # no_sync: two accumulated micro-batches equal one large batch (sum-scaled gradients)
    g = np.random.default_rng(4)
    xa, xb, ga, gb = g.standard_normal((5, 6)), g.standard_normal((4, 6)), g.standard_normal((5, 3)), \
        g.standard_normal((4, 3))
    big = mlp(np.float64)
    big(np.concatenate([xa, xb]))
    big.backward(np.concatenate([ga, gb]) / 9)
    m = mlp(np.float64)
    dp = fld.DataParallel(m)
    for i, (xm, gm) in enumerate(((xa, ga), (xb, gb))):
        sl = fld.share(len(xm), comm.rank, comm.size)
        dp.set_batch(sl.stop - sl.start, 9, grad_scale="sum")
        if i == 0:
            with dp.no_sync():
                dp(xm[sl])
                dp.backward(gm[sl] / 9)
        else:
            dp(xm[sl])
            dp.backward(gm[sl] / 9)
    d = max(float(np.abs(p.grad - q.grad).max()) for p, q in zip(m.parameters(), big.parameters()))
    check("no_sync_equals_large_batch", d, d <= 1e-14)

elif mode == "resume":
    x, y = data((6,), 21, np.float64, 6)

    def run(epochs, path, resume=False):
        m = mlp(np.float64, dropout=0.25)
        dp = fld.DataParallel(m)
        fl.train.fit(dp, nn.CrossEntropyLoss(), fl.optim.Adam(dp.parameters(), lr=1e-2), (x, y), (x, y),
                     epochs=epochs, batch_size=8, progress=False, seed=3, checkpoint_path=path, resume=resume)
        return m

    full = run(4, os.path.join(outdir, "full.ckpt"))
    part = os.path.join(outdir, "part.ckpt")
    run(2, part)
    if comm.rank == 0:
        ck = fl.load(part)
        rr = ck["fit_state"]["rank_rng"]
        check("ckpt_has_every_rank_rng", len(rr), len(rr) == comm.size and ck["fit_state"]["ranks"] == comm.size)
        check("dropout_streams_differ_per_rank", 0, comm.size == 1 or rr[0] != rr[1])
    # files (history) only from rank 0
    m = mlp(np.float64)
    dp = fld.DataParallel(m)
    fl.train.fit(dp, nn.CrossEntropyLoss(), fl.optim.SGD(dp.parameters(), lr=0.1), (x, y), epochs=1,
                 batch_size=8, progress=False, history_path=os.path.join(outdir, f"hist_rank{comm.rank}.csv"))
    # seed=None: rank 0's entropy is shared, so the ranks still draw one batch order: the rows the
    # ranks saw in an epoch are every row exactly once
    class Record(nn.Module):
        def __init__(self):
            super().__init__()
            self.seen = []

        def forward(self, x):
            self.seen.append(x[:, 0].copy())
            return x

        def backward(self, g):
            return g

    rec = Record()
    m = nn.Sequential(rec, mlp(np.float64))
    dp = fld.DataParallel(m)
    ids = x.copy()
    ids[:, 0] = np.arange(len(x))
    fl.train.fit(dp, nn.CrossEntropyLoss(), fl.optim.SGD(dp.parameters(), lr=0.1), (ids, y), epochs=1,
                 batch_size=8, progress=False, seed=None)
    rows = np.sort(np.concatenate([np.concatenate(s) for s in comm.allgather(rec.seen)]))
    check("seed_none_one_batch_order", 0, np.array_equal(rows, np.arange(len(x))))
    comm.barrier()
    check("history_written_by_rank0_only", 0, os.path.exists(os.path.join(outdir, "hist_rank0.csv"))
          and not any(os.path.exists(os.path.join(outdir, f"hist_rank{r}.csv")) for r in range(1, comm.size)))
    resumed = run(4, part, resume=True)
    d = maxdiff(full.parameters(), resumed.parameters())
    check("resume_bitwise", d, d == 0 and replicas_identical(resumed))
else:
    raise SystemExit(f"unknown mode {mode}")

allres = comm.allgather(results)
ok = all(r[2] for rr in allres for r in rr)
if comm.rank == 0:
    for rk, rr in enumerate(allres):
        for name, value, good in rr:
            print(f"CHECK rank{rk} {name} {value:.3e} {'ok' if good else 'FAIL'}")
    print("ALL OK" if ok else "SOME FAILED", flush=True)
sys.exit(0 if ok else 3)
