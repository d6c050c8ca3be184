"""Timing shared by the Python comparisons (bench_rnn.py, bench_conv.py).

``round_robin_medians`` runs ours and the peer's calls in turn within each
repetition, so a noisy neighbour hits both alike; ``add_clock_argument`` offers
``--clock cpu`` (the calling thread's CPU time, ``time.thread_time``), which
time-slicing by other processes on a shared host does not inflate.

``run_isolated`` runs each library in processes of its own instead (the
benchmark's worker mode, ``--only LIB``), alternated over rounds: at 2+ threads
the idle worker threads of the library called just before (OpenBLAS's, torch's
OpenMP pool) keep spinning on the other core and take it from the next
library's threads, so in one process the figures depend on the call order.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
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


PEERS = ("ours", "torch")


def add_isolation_arguments(parser, libs) -> None:
    """--isolate / --rounds, and the hidden worker options run_isolated starts the script with."""
    parser.add_argument("--isolate", choices=["auto", "on", "off"], default="auto",
                        help="on: each library in processes of its own, alternated over --rounds rounds "
                             "(auto: at 2+ threads, where one library's idle threads spinning after its call "
                             "would take the core from the next library's)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of the isolated processes (medians over them)")
    parser.add_argument("--worker", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--only", choices=libs, default=None, help=argparse.SUPPRESS)


def isolating(args, threads) -> bool:
    """Whether this thread count runs each library in its own processes (--isolate)."""
    return args.isolate == "on" or (args.isolate == "auto" and threads > 1)


def timed(pair, libs, repeats, clock="wall", warmup=2):
    """(ours, torch) medians of the pair of callables, round-robin as above;
    None for a library not in ``libs`` (a worker of run_isolated times one)."""
    fns = [fn for lib, fn in zip(PEERS, pair) if lib in libs]
    t = iter(round_robin_medians(fns, repeats, clock, warmup))
    return tuple(next(t) if lib in libs else None for lib in PEERS)


def run_isolated(cmd, libs, rounds, env=None):
    """Runs ``cmd + ["--only", lib]`` for every lib, ``rounds`` times in turn.
    Each run prints JSON rows, one per case, with the lib's seconds in
    ``row["t"][lib]``; returns the rows (first-seen order, the other fields as
    printed) with ``t`` holding every lib's median over the rounds."""
    rows, times = {}, {}
    for _ in range(rounds):
        for lib in libs:
            out = subprocess.run(cmd + ["--only", lib], env=env, stdout=subprocess.PIPE, text=True)
            if out.returncode != 0:
                sys.exit(out.returncode)
            for line in out.stdout.splitlines():
                r = json.loads(line)
                key = json.dumps({k: v for k, v in r.items() if k != "t"}, sort_keys=True)
                rows.setdefault(key, r)
                times.setdefault(key, {x: [] for x in libs})[lib].append(r["t"][lib])
    return [dict(rows[k], t={x: statistics.median(v) for x, v in times[k].items()}) for k in rows]
