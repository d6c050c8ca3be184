"""LSTM / GRU forward and forward+backward: fusedlearn.nn vs torch.nn (CPU).

Ours: nn.LSTM / nn.GRU (C++ sequence driver, fused cells, explicit backward).
Peer: torch.nn.LSTM / torch.nn.GRU with autograd backward.  Same weights,
same inputs, float32, medians of repeated runs, at 1 and 2 threads
(fl.set_num_threads + torch.set_num_threads).  ratio = torch time / ours
(> 1: we are faster).

    PYTHONPATH=python python3 bench/bench_rnn.py [--repeats 7] [--quick] [--threads 1,2] [--clock wall|cpu]

Ours and torch's calls alternate (round-robin) within each repetition.
"""
from __future__ import annotations

import argparse

import numpy as np
import torch

import fusedlearn as fl
from fusedlearn import nn
from timing import add_clock_argument, round_robin_medians

SHAPES = [(100, 64, 256, 512), (35, 20, 650, 650), (50, 32, 128, 128)]


def bench_one(kind, T, B, I, H, repeats, clock):
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
        "fwd": round_robin_medians([ours_fwd, torch_fwd], repeats, clock),
        "fwd+bwd": round_robin_medians([ours_fb, torch_fb], repeats, clock),
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--quick", action="store_true", help="one shape, 3 repeats")
    ap.add_argument("--threads", default="1,2")
    add_clock_argument(ap)
    args = ap.parse_args()
    shapes = SHAPES[-1:] if args.quick else SHAPES
    repeats = 3 if args.quick else args.repeats
    print(f"fusedlearn ISA {fl.get_isa()}, torch {torch.__version__}; medians of {repeats} runs, ms")
    print(f"{'cell':5} {'(T, B, I, H)':>20} {'thr':>3} {'pass':>8} {'ours':>9} {'torch':>9} {'ratio':>6}")
    for threads in [int(t) for t in args.threads.split(",")]:
        fl.set_num_threads(threads)
        torch.set_num_threads(threads)
        for kind in ("LSTM", "GRU"):
            for shape in shapes:
                res = bench_one(kind, *shape, repeats, args.clock)
                for name, (ours, theirs) in res.items():
                    print(f"{kind:5} {str(shape):>20} {threads:>3} {name:>8} {ours * 1e3:9.2f} {theirs * 1e3:9.2f} "
                          f"{theirs / ours:6.2f}", flush=True)


if __name__ == "__main__":
    main()
