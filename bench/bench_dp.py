"""Data-parallel training throughput on this machine, three ways, against torch DDP (gloo).

    python bench/bench_dp.py [--quick] [--json out.json]

Configurations, each in processes of its own, alternated over ``--rounds`` rounds (a noisy
neighbour hits all alike): ours 1 rank x 1 thread, 1 rank x 2 threads, 2 ranks x 1 thread
(blocking and ``overlap=True``), and torch DDP (gloo, ``init_method=file://``) 2 ranks x 1 thread,
both 2-rank runs launched by the same ``mpiexec``.  Models: LeNet-5 (batch 256, 1x28x28) and
ResNet-8 (``resnet_small(blocks_per_stage=1)``, batch 128, 3x32x32), float32, random data (the
same shapes and classes as Fashion-MNIST / CIFAR-10; the step time does not depend on the
values), SGD with momentum.  A step is forward + loss + backward (with the reduction) + optimizer
step; throughput = global batch / median step time after the warmup steps (rank 0's clock; the
reduction synchronises the ranks).  ``comm`` is the fraction of the step inside the all-reduce
calls (``DataParallel.comm_seconds``).  Then the all-reduce micro-benchmark: ``MPIComm.allreduce_``
on float32 buffers 4 KiB ... 64 MiB at 2 ranks, ``t = alpha + bytes / beta`` fitted by least squares
on the relative residuals (each size weighs alike).

Wall clock only: the configurations use 2 threads or 2 processes, where a thread's CPU time
(``--clock cpu`` elsewhere) does not measure the step.  Quote ``uptime`` with the figures.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
MODELS = {"lenet5": (256, (1, 28, 28)), "resnet8": (128, (3, 32, 32))}


# ---- workers --------------------------------------------------------------------------
def _rank_size():
    return int(os.environ.get("OMPI_COMM_WORLD_RANK", 0)), int(os.environ.get("OMPI_COMM_WORLD_SIZE", 1))


def _data(model, n_local, rank):
    batch, shape = MODELS[model]
    rng = np.random.default_rng(100 + rank)
    return rng.standard_normal((n_local,) + shape).astype(np.float32), rng.integers(0, 10, n_local)


def worker_ours(a) -> dict:
    import fusedlearn as fl
    import fusedlearn.distributed as fld

    comm = fld.init(threads=a.threads)
    fl.set_num_threads(a.threads)
    batch, _ = MODELS[a.model]
    n_local = fld.shares(batch, comm.size)[comm.rank]
    model = fl.models.lenet5(seed=0) if a.model == "lenet5" else fl.models.resnet_small(blocks_per_stage=1, seed=0)
    kw = {} if not a.bucket_mb else {"bucket_cap_mb": a.bucket_mb, "first_bucket_mb": a.bucket_mb}
    dp = fld.DataParallel(model.float(), overlap=a.overlap, **kw)
    opt = fl.optim.SGD(dp.parameters(), lr=0.01, momentum=0.9)
    loss = fl.nn.CrossEntropyLoss()
    x, y = _data(a.model, n_local, comm.rank)
    steps, comms = [], []
    for _ in range(a.warmup + a.steps):
        c0 = dp.comm_seconds
        t0 = time.perf_counter()
        opt.zero_grad()
        dp.set_batch(n_local, batch)
        _, g = loss(dp(x), y)
        dp.backward_params(g)
        opt.step()
        steps.append(time.perf_counter() - t0)
        comms.append(dp.comm_seconds - c0)
    steps, comms = steps[a.warmup:], comms[a.warmup:]
    nparams = sum(p.size for p in dp.parameters())
    return {"step_s": statistics.median(steps), "comm_frac": statistics.median(c / s for c, s in zip(comms, steps)),
            "grad_bytes": 4 * nparams, "ranks": comm.size, "threads": a.threads, "rank": comm.rank}


def _torch_model(name):
    import torch.nn as tnn

    if name == "lenet5":
        return tnn.Sequential(tnn.Conv2d(1, 6, 5, padding=2), tnn.ReLU(), tnn.MaxPool2d(2), tnn.Conv2d(6, 16, 5),
                              tnn.ReLU(), tnn.MaxPool2d(2), tnn.Flatten(), tnn.Linear(400, 120), tnn.ReLU(),
                              tnn.Linear(120, 84), tnn.ReLU(), tnn.Linear(84, 10))

    class Block(tnn.Module):
        def __init__(self, cin, cout, stride):
            super().__init__()
            self.body = tnn.Sequential(tnn.Conv2d(cin, cout, 3, stride, 1, bias=False), tnn.BatchNorm2d(cout),
                                       tnn.ReLU(), tnn.Conv2d(cout, cout, 3, 1, 1, bias=False), tnn.BatchNorm2d(cout))
            self.short = (tnn.Identity() if stride == 1 and cin == cout else
                          tnn.Sequential(tnn.Conv2d(cin, cout, 1, stride, bias=False), tnn.BatchNorm2d(cout)))

        def forward(self, x):
            return (self.body(x) + self.short(x)).relu()

    return tnn.Sequential(tnn.Conv2d(3, 16, 3, padding=1, bias=False), tnn.BatchNorm2d(16), tnn.ReLU(),
                          Block(16, 16, 1), Block(16, 32, 2), Block(32, 64, 2),
                          tnn.AdaptiveAvgPool2d(1), tnn.Flatten(), tnn.Linear(64, 10))


def worker_torch(a) -> dict:
    import torch
    import torch.distributed as dist

    torch.set_num_threads(a.threads)
    rank, size = _rank_size()
    dist.init_process_group("gloo", init_method=f"file://{a.rendezvous}", rank=rank, world_size=size)
    torch.manual_seed(0)
    model = torch.nn.parallel.DistributedDataParallel(_torch_model(a.model))
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    lossf = torch.nn.CrossEntropyLoss()
    batch, _ = MODELS[a.model]
    n_local = batch // size + (rank < batch % size)
    x, y = _data(a.model, n_local, rank)
    x, y = torch.from_numpy(x), torch.from_numpy(y)
    steps = []
    for _ in range(a.warmup + a.steps):
        t0 = time.perf_counter()
        opt.zero_grad()
        lossf(model(x), y).backward()
        opt.step()
        steps.append(time.perf_counter() - t0)
    dist.barrier()  # the process then leaves with os._exit: gloo's teardown can abort at exit
    return {"step_s": statistics.median(steps[a.warmup:]), "comm_frac": None, "ranks": size,
            "threads": a.threads, "rank": rank}


def worker_allreduce(a) -> dict:
    import fusedlearn.distributed as fld

    comm = fld.init(threads=1)
    out = []
    for nbytes in [4096 * 4 ** k for k in range(8)]:  # 4 KiB ... 64 MiB
        buf = np.ones(nbytes // 4, np.float32)
        reps = max(3, min(200, int(2e7 // nbytes))) // (3 if a.quick else 1) + 2
        comm.allreduce_(buf)
        ts = []
        for _ in range(reps):
            comm.barrier()
            t0 = time.perf_counter()
            comm.allreduce_(buf)
            ts.append(time.perf_counter() - t0)
        out.append((nbytes, statistics.median(ts)))
    return {"sizes": out, "rank": comm.rank}


# ---- driver ---------------------------------------------------------------------------
def _mpiexec():
    exe = shutil.which("mpiexec", path=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))
    if exe is None:
        sys.exit("bench_dp: mpiexec not found (pip install 'fusedlearn[mpi]')")
    return exe


BIND = ["--bind-to", "core"]


def _launch(ranks, args, timeout=600):
    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
               OMPI_MCA_rmaps_base_oversubscribe="1", OMP_NUM_THREADS=str(args[args.index("--threads") + 1])
               if "--threads" in args else "1")
    cmd = [sys.executable, os.path.abspath(__file__), *args]
    if ranks > 1:
        cmd = [_mpiexec(), "-n", str(ranks), *BIND, *cmd]
    else:
        for k in ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK"):
            env.pop(k, None)
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    lines = [json.loads(s[5:]) for s in r.stdout.splitlines() if s.startswith("JSON ")]
    if r.returncode or not lines:
        raise RuntimeError(f"bench_dp: {' '.join(cmd)} failed:\n{r.stdout}\n{r.stderr}")
    return [x for x in lines if x["rank"] == 0][0]


CONFIGS = [  # (label, library, ranks, threads, overlap)
    ("ours 1x1", "ours", 1, 1, False), ("ours 1x2", "ours", 1, 2, False), ("ours 2x1", "ours", 2, 1, False),
    ("ours 2x1 overlap", "ours", 2, 1, True), ("torch DDP 2x1", "torch", 2, 1, False)]


def _fit_alpha_beta(sizes):
    n = np.array([s for s, _ in sizes], float)
    t = np.array([t for _, t in sizes], float)
    A = np.stack([np.ones_like(n), n], 1) / t[:, None]  # relative residuals: every size counts alike
    (alpha, inv_beta), *_ = np.linalg.lstsq(A, np.ones_like(t), rcond=None)
    return float(alpha), float(1 / inv_beta) if inv_beta > 0 else float("inf")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer steps and rounds (about 3 minutes)")
    ap.add_argument("--rounds", type=int, help="rounds over the configurations (default 3, quick 2)")
    ap.add_argument("--steps", type=int, help="timed steps per run (default 20, quick 6)")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    ap.add_argument("--no-torch", action="store_true", help="skip torch DDP")
    ap.add_argument("--json", help="write the results here (bench/dp_model.py reads it)")
    ap.add_argument("--bucket-mb", type=float, default=0.0,
                    help="first and later bucket size in MiB for ours (default: DataParallel's 1 and 25; "
                         "both models then fit one bucket, so overlap has nothing to overlap; e.g. 0.05)")
    ap.add_argument("--bind", choices=["core", "none"], default="core",
                    help="mpiexec --bind-to for the 2-rank runs (default core; 'none' lets a rank leave a core "
                         "another tenant is using, fairer to 1x1 on a shared machine)")
    ap.add_argument("--worker", choices=["ours", "torch", "allreduce"], help=argparse.SUPPRESS)
    ap.add_argument("--model", help=argparse.SUPPRESS)
    ap.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    ap.add_argument("--overlap", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--rendezvous", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.worker:
        res = {"ours": worker_ours, "torch": worker_torch, "allreduce": worker_allreduce}[a.worker](a)
        print("JSON " + json.dumps(res), flush=True)
        if a.worker == "torch":
            sys.stderr.flush()
            os._exit(0)
        return 0
    BIND[1] = a.bind
    rounds = a.rounds or (2 if a.quick else 3)
    steps = a.steps or (6 if a.quick else 20)
    configs = [c for c in CONFIGS if not (a.no_torch and c[1] == "torch")]
    if not a.no_torch:
        try:
            import torch  # noqa: F401
        except ImportError:
            print("torch not installed: torch DDP skipped")
            configs = [c for c in configs if c[1] != "torch"]
    print(f"load: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f} "
          f"(1/5/15 min), {os.cpu_count()} CPUs; {rounds} rounds x {steps} steps (+{a.warmup} warmup); "
          f"mpiexec --bind-to {a.bind}; buckets {f'{a.bucket_mb} MiB' if a.bucket_mb else 'default (1 + 25 MiB)'}")
    res = {m: {c[0]: [] for c in configs} for m in a.models}
    extra = {}
    tmp = tempfile.mkdtemp(prefix="bench_dp_")
    for r in range(rounds):
        for m in a.models:
            for label, lib, ranks, threads, overlap in configs:
                args = ["--worker", lib, "--model", m, "--threads", str(threads),
                        "--steps", str(steps), "--warmup", str(a.warmup)]
                if overlap:
                    args.append("--overlap")
                if lib == "ours" and a.bucket_mb:
                    args += ["--bucket-mb", str(a.bucket_mb)]
                if lib == "torch":
                    args += ["--rendezvous", os.path.join(tmp, f"rdv_{m}_{r}")]
                out = _launch(ranks, args)
                res[m][label].append(out["step_s"])
                extra[m, label] = out
    print(f"\n{'model':8s} {'config':18s} {'step ms':>9s} {'samples/s':>10s} {'comm %':>7s}")
    table = {}
    for m in a.models:
        batch = MODELS[m][0]
        table[m] = {}
        for label, *_ in configs:
            s = statistics.median(res[m][label])
            cf = extra[m, label].get("comm_frac")
            table[m][label] = {"step_s": s, "samples_per_s": batch / s, "comm_frac": cf, "rounds": res[m][label]}
            print(f"{m:8s} {label:18s} {s * 1e3:9.1f} {batch / s:10.0f} "
                  f"{'' if cf is None else f'{cf * 100:6.1f}':>7s}")
        t = table[m]
        print(f"{m}: ours 2x1 / ours 1x1 = {t['ours 1x1']['step_s'] / t['ours 2x1']['step_s']:.2f} (target >= 1.8); "
              f"ours 1x2 / ours 1x1 = {t['ours 1x1']['step_s'] / t['ours 1x2']['step_s']:.2f}; "
              f"overlap on / off = {t['ours 2x1']['step_s'] / t['ours 2x1 overlap']['step_s']:.2f}"
              + (f"; ours 2x1 / torch DDP 2x1 = {t['torch DDP 2x1']['step_s'] / t['ours 2x1']['step_s']:.2f} "
                 f"(target >= 1.3)" if "torch DDP 2x1" in t else ""))
        table[m]["grad_bytes"] = extra[m, "ours 1x1"]["grad_bytes"]
        table[m]["batch"] = batch
    ar = _launch(2, ["--worker", "allreduce"] + (["--quick"] if a.quick else []))["sizes"]
    alpha, beta = _fit_alpha_beta(ar)
    print("\nMPIComm.allreduce_ (float32, in place), 2 ranks:")
    for nbytes, t in ar:
        print(f"  {nbytes / 1024:9.0f} KiB  {t * 1e6:10.1f} us  {nbytes / t / 1e9:6.2f} GB/s")
    print(f"  fit t = alpha + bytes/beta: alpha = {alpha * 1e6:.1f} us, beta = {beta / 1e9:.2f} GB/s")
    print(f"load after: {os.getloadavg()[0]:.2f}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"models": table, "allreduce": {"sizes": ar, "alpha_s": alpha, "beta_Bps": beta},
                       "load": os.getloadavg()}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
