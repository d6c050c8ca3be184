"""Timing shared by the Python comparisons (bench_rnn.py, bench_conv.py).

``round_robin_medians`` runs ours and the peer's calls in turn within each
repetition, so a noisy neighbour hits both alike; ``add_clock_argument`` offers
``--clock cpu`` (the calling thread's CPU time, ``time.thread_time``), which
time-slicing by other processes on a shared host does not inflate.
"""
from __future__ import annotations

import statistics
import time

CLOCKS = {"wall": time.perf_counter, "cpu": time.thread_time}


def add_clock_argument(parser) -> None:
    parser.add_argument("--clock", choices=sorted(CLOCKS), default="wall",
                        help="cpu: this thread's CPU time (time.thread_time), robust to other processes on a "
                             "shared machine; meaningful at 1 thread only")


def round_robin_medians(fns, repeats, clock="wall", warmup=1):
    """Medians over ``repeats`` rounds, each running every fn once, in turn;
    ``warmup`` untimed rounds first (allocations, packing buffers, thread pools)."""
    now = CLOCKS[clock]
    for _ in range(warmup):
        for fn in fns:
            fn()
    ts = [[] for _ in fns]
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            t0 = now()
            fn()
            ts[i].append(now() - t0)
    return tuple(statistics.median(t) for t in ts)
