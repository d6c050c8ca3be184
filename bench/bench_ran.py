#!/usr/bin/env python3
"""One RAN-EKF update step: fusedlearn's C++ kernel (_C.ran_step) against a
straightforward vectorized numpy implementation of the same step.

K units on d = 4 inputs (the Mackey-Glass set-up), one output: p = 1 + 5K
parameters and a p x p covariance.  The step evaluates every unit, forms the
Jacobian A, then B = P A^T, S = R + A B, G = B / S, theta += G e,
P = P - G B^T + Q0 I (docs/math/ran.md).  No unit is allocated (delta is set
above every distance).  Ours keeps P packed (lower triangle); numpy keeps the
full matrix and uses BLAS (P @ a) and in-place ufuncs (P -= np.outer(g, b)).
Ours is timed two ways: the kernel partial_fit uses (_C.ran_run, one call
for a stream of n samples, each step's update pass fused with the next
sample's B = P A^T) and the single step (_C.ran_step once per sample from
Python, two passes over P).  Timed in interleaved rounds after warm-up; the
figure is the median round divided by n.  The limit columns are the bytes of
P each organisation moves per step over the read+write bandwidth measured at
P's size (a *= 1.0 on an array as large as P).

    PYTHONPATH=python python3 bench/bench_ran.py [--units 50,200,800] [--repeats 15] [--clock cpu]
"""
from __future__ import annotations

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from timing import add_clock_argument, round_robin_medians  # noqa: E402

import fusedlearn as fl  # noqa: E402
from fusedlearn import _C  # noqa: E402


def setup(K, d=4, m=1, seed=0):
    rng = np.random.default_rng(seed)
    C = rng.uniform(0.4, 1.3, size=(K, d))
    alpha = rng.normal(scale=0.1, size=(K, m))
    w = rng.uniform(0.1, 0.6, size=K)
    b = np.array([0.9])
    p = m + K * (m + d)
    theta = np.concatenate([b] + [np.concatenate([alpha[k], C[k]]) for k in range(K)])
    return C, alpha, w, b, theta, p


def numpy_step(state, x, y, R=1.0, Q0=0.02):
    C, alpha, w, b, P = state["C"], state["alpha"], state["w"], state["b"], state["P"]
    K, d = C.shape
    diff = x - C
    phi = np.exp(-np.einsum("kd,kd->k", diff, diff) / w ** 2)
    e = y - (b[0] + phi @ alpha[:, 0])
    a = np.empty(1 + K * (1 + d))
    a[0] = 1.0
    blk = a[1:].reshape(K, 1 + d)
    blk[:, 0] = phi
    blk[:, 1:] = (2 * alpha[:, 0] * phi / w ** 2)[:, None] * diff
    B = P @ a
    s = R + a @ B
    g = B / s
    th = g * e
    b += th[0]
    tb = th[1:].reshape(K, 1 + d)
    alpha[:, 0] += tb[:, 0]
    C += tb[:, 1:]
    P -= np.outer(g, B)
    P.flat[::P.shape[0] + 1] += Q0


def bandwidth(nbytes, reps=20):
    """Bytes per second of an in-place read-modify-write of an nbytes array
    (a *= 1.0: nbytes read + nbytes written), the median of reps passes after
    one warm-up: the traffic pattern of one pass over P at P's own size (so
    L2 / L3 / DRAM as P itself)."""
    import time
    a = np.ones(max(1, nbytes // 8))
    np.multiply(a, 1.0, out=a)
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        np.multiply(a, 1.0, out=a)
        ts.append(time.perf_counter() - t0)
    return 2 * a.nbytes / sorted(ts)[len(ts) // 2]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--units", default="50,200,800")
    ap.add_argument("--repeats", type=int, default=15)
    add_clock_argument(ap)
    args = ap.parse_args()
    print(f"isa {fl.get_isa()}, threads 1 (the step is single-threaded); {args.clock} clock, median of "
          f"{args.repeats} interleaved rounds, each a stream of n samples; figures per sample")
    print("ours run: partial_fit's kernel (_C.ran_run: one call for the stream, fused P passes); "
          "ours step: _C.ran_step once per sample (two P passes + a pybind call)")
    print("limit: bytes of P moved per step / the read+write bandwidth measured at P's size "
          "(ours fused 2 x packed, two-pass 3 x packed; numpy 5 x full: gemv read, outer write, "
          "P -= read 2 + write 1)")
    hdr = (f"{'units':>6} {'params':>7} {'n':>4} {'GB/s':>6} {'run ms':>8} {'step ms':>8} {'numpy ms':>9} "
           f"{'np/run':>7} {'np/step':>7} {'lim run':>8} {'lim step':>8} {'lim np':>8}")
    print(hdr)
    rng = np.random.default_rng(1)
    for K in [int(k) for k in args.units.split(",")]:
        C, alpha, w, b, theta, p = setup(K)
        n = max(4, 10000 // K)
        X = rng.uniform(0.4, 1.3, size=(n, 4))
        Y = np.full((n, 1), 0.9)
        no_alloc = np.full(n, 1e9)  # delta above every distance: no unit is allocated
        q = p + 5  # room for one more unit (ran_step requires it)

        def buffers():
            th = np.zeros(q)
            th[:p] = theta
            wd = np.zeros(K + 1)
            wd[:K] = w
            Pp = np.zeros(q * (q + 1) // 2)
            Pp[[i * (i + 1) // 2 + i for i in range(p)]] = 1.0
            return th, wd, Pp

        run_b, step_b = buffers(), buffers()
        state = {"C": C.copy(), "alpha": alpha.copy(), "w": w, "b": b.copy(), "P": np.eye(p)}

        def ours_run():
            th, wd, Pp = run_b
            _C.ran_run(th, wd, Pp, X, Y, no_alloc, K, K + 1, 4, 1, 0.0, 0.87, 0.0, 1.0, 1.0, 0.02, True, 2)

        def ours_step():
            th, wd, Pp = step_b
            for i in range(n):
                _C.ran_step(th, wd, Pp, X[i], Y[i], K, 4, 1, 1e9, 0.0, 0.87, 0.0, 1.0, 1.0, 0.02, True, 2)

        def numpy_():
            for i in range(n):
                numpy_step(state, X[i], Y[i, 0])

        reps = args.repeats if K < 800 else max(5, args.repeats // 3)
        t_run, t_step, t_np = (t / n for t in round_robin_medians([ours_run, ours_step, numpy_], reps,
                                                                   clock=args.clock, warmup=1))
        packed, full = 8 * p * (p + 1) // 2, 8 * p * p
        bw_packed, bw_full = bandwidth(packed), bandwidth(full)
        lim_run, lim_step, lim_np = 2 * packed / bw_packed, 3 * packed / bw_packed, 5 * full / bw_full
        print(f"{K:>6} {p:>7} {n:>4} {bw_packed / 1e9:>6.1f} {t_run * 1e3:>8.3f} {t_step * 1e3:>8.3f} "
              f"{t_np * 1e3:>9.3f} {t_np / t_run:>6.1f}x {t_np / t_step:>6.1f}x {lim_run * 1e3:>8.3f} "
              f"{lim_step * 1e3:>8.3f} {lim_np * 1e3:>8.3f}")


if __name__ == "__main__":
    main()
