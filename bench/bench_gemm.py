"""float32 GEMM: fusedlearn vs numpy (OpenBLAS) vs torch.matmul, 1 and 2 threads.

    PYTHONPATH=python python3 bench/bench_gemm.py            # all shapes, 1 and 2 threads
    PYTHONPATH=python python3 bench/bench_gemm.py --quick    # fewer repetitions
    PYTHONPATH=python python3 bench/bench_gemm.py --threads 1 --shapes 1024,64x512x2048

Each thread count runs in its own subprocess, so that OpenBLAS, torch and
fusedlearn all start with exactly that many threads: OPENBLAS_NUM_THREADS /
OMP_NUM_THREADS / MKL_NUM_THREADS are set, and OPENBLAS_CORETYPE and
OPENBLAS_L2_SIZE are removed so OpenBLAS picks its own kernel for this CPU.
Within a process the three libraries are timed round-robin (one call each, in
turn, repeated), so a noisy neighbour affects them alike; the figures are
medians, GFLOP/s = 2*M*N*K / time.  Every GEMM call writes into a
preallocated output (numpy ``out=``, torch ``out=``, ours ``out=``); in the
Linear table all three allocate their result.

Second table: the fused Linear + bias + ReLU, ``fl.functional.linear(x, w, b,
"relu")`` (one pass: the epilogue runs on each tile as it is written) against
numpy's ``np.maximum(x @ w.T + b, 0)`` and torch's ``relu(addmm(b, x, w.T))``,
with torch's weight layout w = [out, in].
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

from timing import add_isolation_arguments, isolating, run_isolated

SQUARE = [64, 128, 256, 512, 1024, 2048]
RNN = [(64, 512, 2048), (64, 1024, 4096), (4096, 256, 256)]  # (M, K, N)


def parse_shapes(text):
    out = []
    for part in text.split(","):
        dims = [int(x) for x in part.lower().split("x")]
        out.append(tuple(dims * 3) if len(dims) == 1 else tuple(dims))
    return out


def cpu_mhz():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("cpu MHz"):
                    return float(line.split(":")[1])
    except OSError:
        pass
    return float("nan")


def cpu_vendor_family():
    """(vendor_id, cpu family) from /proc/cpuinfo, e.g. ("AuthenticAMD", 25)."""
    vendor, family = "", -1
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("vendor_id") and not vendor:
                    vendor = line.split(":")[1].strip()
                elif line.startswith("cpu family") and family < 0:
                    family = int(line.split(":")[1])
    except (OSError, ValueError):
        pass
    return vendor, family


def fma_issue(isa):
    """(FMA instructions per cycle, fp32 lanes each) of this core at `isa`.

    Intel cores with AVX-512 issue two 512-bit FMAs a cycle; AMD Zen 4 (family 25) has
    two 256-bit FMA pipes and runs a 512-bit FMA as both halves, so one zmm FMA a cycle."""
    lanes = {"avx512": 16, "avx2": 8}.get(isa, 4)
    vendor, family = cpu_vendor_family()
    if isa == "avx512" and vendor == "AuthenticAMD" and family == 25:
        return 1, lanes
    return 2, lanes


def selected_isa():
    """The instruction set fusedlearn runs here (its build and this CPU), for the peak estimate."""
    out = subprocess.run([sys.executable, "-c", "import fusedlearn; print(fusedlearn.build_info()['selected_isa'])"],
                         capture_output=True, text=True)
    return out.stdout.strip() or "avx2"


LIBS = ("ours", "numpy", "torch")


def worker(nt, shapes, reps, target_s, clock="wall", only=None):
    import numpy as np

    import fusedlearn as fl

    libs = LIBS if only is None else (only,)
    torch = None
    if "torch" in libs:
        import torch

        torch.set_num_threads(nt)
    fl.set_num_threads(nt)
    now = time.thread_time if clock == "cpu" else time.perf_counter
    F = fl.functional
    rng = np.random.default_rng(0)

    def bench(fns):
        # calls per sample so that one sample takes ~target_s
        fns = {k: f for k, f in fns.items() if k in libs}
        for f in fns.values():
            f()
        t0 = now()
        next(iter(fns.values()))()
        one = max(now() - t0, 1e-6)
        inner = max(1, int(target_s / one))
        samples = {k: [] for k in fns}
        for _ in range(reps):
            for k, f in fns.items():
                t0 = now()
                for _ in range(inner):
                    f()
                samples[k].append((now() - t0) / inner)
        return {k: statistics.median(v) for k, v in samples.items()}

    for m, k, n in shapes:
        a = rng.standard_normal((m, k), dtype=np.float32)
        b = rng.standard_normal((k, n), dtype=np.float32)
        o = np.empty((m, n), np.float32)
        if torch is not None:
            ta, tb, to = torch.from_numpy(a), torch.from_numpy(b), torch.empty(m, n)
        t = bench({
            "ours": lambda: F.gemm(a, b, out=o),
            "numpy": lambda: np.matmul(a, b, out=o),
            "torch": lambda: torch.matmul(ta, tb, out=to),
        })
        print(json.dumps({"kind": "gemm", "nt": nt, "shape": [m, k, n], "t": t}), flush=True)

    for m, k, n in shapes:  # linear: batch m, in k, out n
        x = rng.standard_normal((m, k), dtype=np.float32)
        w = rng.standard_normal((n, k), dtype=np.float32)
        bias = rng.standard_normal(n, dtype=np.float32)
        if torch is not None:
            tx, tw, tbias = torch.from_numpy(x), torch.from_numpy(w), torch.from_numpy(bias)
        t = bench({
            "ours": lambda: F.linear(x, w, bias, "relu"),  # allocates its output, as numpy / torch do
            "numpy": lambda: np.maximum(x @ w.T + bias, 0),
            "torch": lambda: torch.relu(torch.addmm(tbias, tx, tw.T)),
        })
        print(json.dumps({"kind": "linear_relu", "nt": nt, "shape": [m, k, n], "t": t}), flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--shapes", default=None, help="comma list of N (square) or MxKxN")
    ap.add_argument("--reps", type=int, default=15)
    ap.add_argument("--target", type=float, default=0.02, help="seconds per timing sample")
    ap.add_argument("--quick", action="store_true", help="5 repetitions of ~10 ms")
    ap.add_argument("--json", default=None, help="write the raw results here")
    ap.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                    help="cpu: CPU time of the calling thread (time.thread_time), which other processes on a "
                         "shared host do not inflate; only meaningful with --threads 1")
    add_isolation_arguments(ap, LIBS)
    args = ap.parse_args()
    if args.quick:
        args.reps, args.target = 5, 0.01
    shapes = parse_shapes(args.shapes) if args.shapes else [(s, s, s) for s in SQUARE] + RNN
    if args.worker is not None:
        worker(args.worker, shapes, args.reps, args.target, args.clock, args.only)
        return

    mhz = cpu_mhz()
    isa = selected_isa()
    fmas, lanes = fma_issue(isa)
    flops_per_cycle = fmas * lanes * 2  # FMAs a cycle x lanes x 2 flops
    print(f"cpu MHz (/proc/cpuinfo, nominal; boost clocks put >100% in reach): {mhz:.0f}; FP32 peak estimate "
          f"({isa}: {fmas} FMA x {lanes} lanes x 2 flops x clock): {flops_per_cycle * mhz / 1000:.1f} GFLOP/s per core")
    results = []
    for nt in [int(x) for x in args.threads.split(",")]:
        env = dict(os.environ)
        env.pop("OPENBLAS_CORETYPE", None)
        env.pop("OPENBLAS_L2_SIZE", None)
        for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            env[var] = str(nt)
        cmd = [sys.executable, os.path.abspath(__file__), "--worker", str(nt), "--reps", str(args.reps),
               "--target", str(args.target), "--clock", args.clock, "--shapes", ",".join("x".join(map(str, s)) for s in shapes)]
        isolate = isolating(args, nt)
        if isolate:
            rows = run_isolated(cmd, LIBS, args.rounds, env)
        else:
            proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, text=True)
            rows = [json.loads(line) for line in proc.stdout]
            if proc.wait() != 0:
                sys.exit(proc.returncode)
        if isolate:
            print(f"(nt={nt}: each library in its own processes, medians over {args.rounds} alternated rounds)")
        for r in rows:
            results.append(r)
            m, k, n = r["shape"]
            gf = {key: 2 * m * n * k / v / 1e9 for key, v in r["t"].items()}
            print(f"{r['kind']:<12} nt={nt} {m:>5}x{k:<5}x{n:>5}  ours {gf['ours']:7.1f}  numpy {gf['numpy']:7.1f}  "
                  f"torch {gf['torch']:7.1f} GFLOP/s   ours/numpy {gf['ours'] / gf['numpy']:5.2f}  "
                  f"ours/torch {gf['ours'] / gf['torch']:5.2f}   peak {100 * gf['ours'] / (flops_per_cycle * mhz / 1000 * nt):5.1f}%",
                  flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"cpu_mhz": mhz, "results": results}, f, indent=1)


if __name__ == "__main__":
    main()
