"""Data-parallel scaling beyond one machine, on paper: the ring all-reduce cost model.

    python bench/dp_model.py --json dp.json            # figures measured by bench/bench_dp.py --json
    python bench/dp_model.py --compute-ms 120 --grad-bytes 300000 --name mymodel

Per step, each of ``p`` nodes computes its own batch (the benchmark's batch per node, weak
scaling) in ``Tc`` (the measured 1 rank x 1 thread step time, minus its own all-reduce time,
which is zero at one rank), then all-reduces ``S`` bytes of gradients, bucketed as
``DataParallel`` does (a 1 MiB first bucket, then 25 MiB ones: ``k`` buckets).  A ring
all-reduce of one bucket of ``s`` bytes costs

    T(s) = 2 (p - 1) / p * s / B  +  2 (p - 1) * alpha

(reduce-scatter then all-gather, ``p - 1`` steps each, every step a message of ``s / p`` bytes
paying the latency ``alpha``).  Without overlap the step takes ``Tc + sum T``; with overlap the
backward is taken as 2/3 of ``Tc`` (two GEMM-like products per layer in backward against one in
forward), bucket ``j`` is complete when the backward has produced its share of the gradient bytes
(uniform in bytes), and the reductions run one after another from then on; the step takes
``Tc +`` whatever of the last reduction runs past the backward (a model whose gradients fit one
bucket gains nothing from overlap: its one reduction starts at the end).
Efficiency = ``Tc / step``.  Networks (``B`` = 90 % of the line rate, ``alpha`` the one-way
small-message latency of MPI over it): 10 Gb/s Ethernet (TCP) 30 us; 25 Gb/s Ethernet (RoCE or
a tuned TCP stack) 10 us; 100 Gb/s InfiniBand (RDMA) 2 us.  Not modelled: the compute of the
summation, stragglers, congestion of a shared switch, hierarchical (intra-node first) reduction.
"""
from __future__ import annotations

import argparse
import json
import math
import sys

NETWORKS = [("10 Gb/s Ethernet", 10e9, 30e-6), ("25 Gb/s Ethernet", 25e9, 10e-6), ("100 Gb/s InfiniBand", 100e9, 2e-6)]
NODES = [2, 4, 8, 16, 32, 64]
BACKWARD_SHARE = 2 / 3


def bucket_sizes(grad_bytes: int, first_mb: float = 1.0, cap_mb: float = 25.0) -> list:
    first, cap = first_mb * 2 ** 20, cap_mb * 2 ** 20
    if grad_bytes <= first:
        return [grad_bytes]
    rest = grad_bytes - first
    k = math.ceil(rest / cap)
    return [first] + [rest / k] * k


def ring_allreduce_s(nbytes: float, p: int, bandwidth_Bps: float, alpha_s: float) -> float:
    if p < 2:
        return 0.0
    return 2 * (p - 1) / p * nbytes / bandwidth_Bps + 2 * (p - 1) * alpha_s


def efficiency(compute_s: float, grad_bytes: int, p: int, line_bps: float, alpha_s: float, overlap: bool) -> float:
    bw = 0.9 * line_bps / 8
    sizes = bucket_sizes(grad_bytes)
    if not overlap:
        exposed = sum(ring_allreduce_s(s, p, bw, alpha_s) for s in sizes)
    else:  # bucket j is complete once its share of the backward is done; reductions run one after another
        tb, done, finish = BACKWARD_SHARE * compute_s, 0.0, 0.0
        for s in sizes:
            done += s
            finish = max(finish, tb * done / grad_bytes) + ring_allreduce_s(s, p, bw, alpha_s)
        exposed = finish - tb
    return compute_s / (compute_s + exposed)
    return compute_s / (compute_s + exposed)


def table(name: str, compute_s: float, grad_bytes: int) -> None:
    print(f"\n{name}: compute {compute_s * 1e3:.1f} ms/step per node, gradients {grad_bytes / 2 ** 20:.2f} MiB "
          f"({len(bucket_sizes(grad_bytes))} bucket(s))")
    print(f"  {'network':22s} {'overlap':8s} " + " ".join(f"{p:>6d}" for p in NODES))
    for net, bps, alpha in NETWORKS:
        for ov in (False, True):
            effs = [efficiency(compute_s, grad_bytes, p, bps, alpha, ov) for p in NODES]
            print(f"  {net:22s} {'on' if ov else 'off':8s} " + " ".join(f"{e * 100:5.1f}%" for e in effs))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", help="bench_dp.py --json output: each model's 1x1 step time and gradient bytes")
    ap.add_argument("--compute-ms", type=float, help="compute time per step and node (instead of --json)")
    ap.add_argument("--grad-bytes", type=int, help="gradient bytes (with --compute-ms)")
    ap.add_argument("--name", default="model")
    a = ap.parse_args(argv)
    print("ring all-reduce T = 2(p-1)/p * S/B + 2(p-1) alpha per bucket; B = 90% of line rate; "
          f"backward = {BACKWARD_SHARE:.2f} of the compute, overlapped per bucket; networks: "
          + "; ".join(f"{n} alpha={al * 1e6:.0f} us" for n, _, al in NETWORKS))
    if a.json:
        with open(a.json) as f:
            data = json.load(f)
        for name, t in data["models"].items():
            table(f"{name} (batch {t['batch']} per node)", t["ours 1x1"]["step_s"], int(t["grad_bytes"]))
    elif a.compute_ms and a.grad_bytes:
        table(a.name, a.compute_ms / 1e3, a.grad_bytes)
    else:
        ap.error("give --json, or --compute-ms and --grad-bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
