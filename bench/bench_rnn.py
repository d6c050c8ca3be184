"""LSTM / GRU forward and forward+backward: fusedlearn.nn vs torch.nn (CPU).

Ours: nn.LSTM / nn.GRU (C++ sequence driver, fused cells, explicit backward).
Peer: torch.nn.LSTM / torch.nn.GRU with autograd backward.  Same weights,
same inputs, float32, medians of repeated runs, at 1 and 2 threads
(fl.set_num_threads + torch.set_num_threads).  ratio = torch time / ours
(> 1: we are faster).

    PYTHONPATH=python python3 bench/bench_rnn.py [--repeats 7] [--quick] [--threads 1,2] [--clock wall|cpu]
                                                 [--isolate auto|on|off] [--rounds 3]

One thread: ours and torch's calls alternate (round-robin) within each repetition.  Two or more
(--isolate auto): each library in processes of its own, alternated over --rounds rounds, medians
over them (timing.run_isolated: in one process the idle threads of the library called just
before spin on the second core and take it from the other's).
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np
import torch

import fusedlearn as fl
from fusedlearn import nn
from timing import PEERS, add_clock_argument, add_isolation_arguments, isolating, run_isolated, timed

SHAPES = [(100, 64, 256, 512), (35, 20, 650, 650), (50, 32, 128, 128)]


def bench_one(kind, T, B, I, H, repeats, clock, libs=PEERS):
    torch.manual_seed(0)
    tm = (torch.nn.LSTM if kind == "LSTM" else torch.nn.GRU)(I, H)
    m = getattr(nn, kind)(I, H)
    m.load_state_dict({k: v.detach().numpy() for k, v in tm.state_dict().items()})
    x = np.random.default_rng(0).standard_normal((T, B, I)).astype(np.float32)
    go = np.random.default_rng(1).standard_normal((T, B, H)).astype(np.float32)
    xt, got = torch.from_numpy(x), torch.from_numpy(go)
    xg = xt.clone().requires_grad_(True)

    def ours_fwd():
        m(x)

    def ours_fb():
        m.zero_grad()
        m(x)
        m.backward(go)

    def torch_fwd():
        with torch.no_grad():
            tm(xt)

    def torch_fb():
        tm.zero_grad()
        xg.grad = None
        out, _ = tm(xg)
        out.backward(got)

    return {
        "fwd": timed((ours_fwd, torch_fwd), libs, repeats, clock, warmup=1),
        "fwd+bwd": timed((ours_fb, torch_fb), libs, repeats, clock, warmup=1),
    }


def rows_for(threads, shapes, repeats, clock, libs=PEERS):
    fl.set_num_threads(threads)
    torch.set_num_threads(threads)
    for kind in ("LSTM", "GRU"):
        for shape in shapes:
            for name, (ours, theirs) in bench_one(kind, *shape, repeats, clock, libs).items():
                yield {"kind": kind, "shape": list(shape), "nt": threads, "pass": name,
                       "t": {"ours": ours, "torch": theirs}}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--quick", action="store_true", help="one shape, 3 repeats")
    ap.add_argument("--threads", default="1,2")
    add_clock_argument(ap)
    add_isolation_arguments(ap, PEERS)
    args = ap.parse_args()
    shapes = SHAPES[-1:] if args.quick else SHAPES
    repeats = 3 if args.quick else args.repeats
    if args.worker is not None:
        for r in rows_for(args.worker, shapes, repeats, args.clock, (args.only,)):
            r["t"] = {args.only: r["t"][args.only]}
            print(json.dumps(r), flush=True)
        return
    print(f"fusedlearn ISA {fl.get_isa()}, torch {torch.__version__}; medians of {repeats} runs, ms")
    print(f"{'cell':5} {'(T, B, I, H)':>20} {'thr':>3} {'pass':>8} {'ours':>9} {'torch':>9} {'ratio':>6}")
    for threads in [int(t) for t in args.threads.split(",")]:
        if isolating(args, threads):
            env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
            cmd = [sys.executable, os.path.abspath(__file__), "--worker", str(threads), "--repeats", str(repeats),
                   "--clock", args.clock] + (["--quick"] if args.quick else [])
            rows, note = run_isolated(cmd, PEERS, args.rounds, env), f"  (own processes, {args.rounds} rounds)"
        else:
            rows, note = rows_for(threads, shapes, repeats, args.clock), ""
        for r in rows:
            ours, theirs = r["t"]["ours"], r["t"]["torch"]
            print(f"{r['kind']:5} {str(tuple(r['shape'])):>20} {threads:>3} {r['pass']:>8} {ours * 1e3:9.2f} "
                  f"{theirs * 1e3:9.2f} {theirs / ours:6.2f}{note}", flush=True)


if __name__ == "__main__":
    main()
