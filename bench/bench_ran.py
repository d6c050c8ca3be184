#!/usr/bin/env python3
"""One RAN-EKF update step: fusedlearn's C++ kernel (_C.ran_step) against a
straightforward vectorized numpy implementation of the same step.

K units on d = 4 inputs (the Mackey-Glass set-up), one output: p = 1 + 5K
parameters and a p x p covariance.  The step evaluates every unit, forms the
Jacobian A, then B = P A^T, S = R + A B, G = B / S, theta += G e,
P = P - G B^T + Q0 I (docs/math/ran.md).  No unit is allocated (delta is set
above every distance).  Ours keeps P packed (lower triangle); numpy keeps the
full matrix and uses BLAS (P @ a) and in-place ufuncs (P -= np.outer(g, b)).
Timed in interleaved rounds after warm-up; the figure is the median step.

    PYTHONPATH=python python3 bench/bench_ran.py [--units 50,200,800] [--repeats 30]
"""
from __future__ import annotations

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from timing import round_robin_medians  # noqa: E402

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


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--units", default="50,200,800")
    ap.add_argument("--repeats", type=int, default=30)
    args = ap.parse_args()
    print(f"isa {fl.get_isa()}, threads 1 (the step is single-threaded); median of {args.repeats}")
    print(f"{'units':>6} {'params':>7} {'ours ms':>9} {'numpy ms':>9} {'numpy/ours':>10}")
    rng = np.random.default_rng(1)
    for K in [int(k) for k in args.units.split(",")]:
        C, alpha, w, b, theta, p = setup(K)
        x = rng.uniform(0.4, 1.3, size=4)
        y = np.array([0.9])
        # ours: theta / widths / packed P with room for one more unit (the step requires it)
        q = p + 5
        th = np.zeros(q)
        th[:p] = theta
        wd = np.zeros(K + 1)
        wd[:K] = w
        Pp = np.zeros(q * (q + 1) // 2)
        Pp[[i * (i + 1) // 2 + i for i in range(p)]] = 1.0
        state = {"C": C.copy(), "alpha": alpha.copy(), "w": w, "b": b.copy(), "P": np.eye(p)}

        def ours():
            _C.ran_step(th, wd, Pp, x, y, K, 4, 1, 1e9, 0.0, 0.87, 0.0, 1.0, 1.0, 0.02, True, 2)

        def numpy_():
            numpy_step(state, x, y[0])

        reps = args.repeats if K < 800 else max(5, args.repeats // 3)
        t_ours, t_np = round_robin_medians([ours, numpy_], reps, warmup=2)
        print(f"{K:>6} {p:>7} {t_ours * 1e3:>9.3f} {t_np * 1e3:>9.3f} {t_np / t_ours:>9.1f}x")


if __name__ == "__main__":
    main()
