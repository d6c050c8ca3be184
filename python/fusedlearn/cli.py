"""The ``fusedlearn`` command."""
from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np


def _progress(prefix: str, i: int, n: int, extra: str = "") -> None:
    width = 24
    done = int(width * i / n)
    end = "\n" if i == n else ""
    sys.stdout.write(f"\r{prefix} [{'#' * done}{'.' * (width - done)}] {i}/{n} {extra}{end}")
    sys.stdout.flush()


def _softmax_xent(logits: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
    z = logits - logits.max(axis=1, keepdims=True)
    ez = np.exp(z)
    prob = ez / ez.sum(axis=1, keepdims=True)
    n = len(y)
    loss = float(-np.log(prob[np.arange(n), y] + 1e-12).mean())
    prob[np.arange(n), y] -= 1.0
    return loss, prob / n


def _make_blobs(n: int, dim: int, classes: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((classes, dim)).astype(np.float32) * 0.6
    y = rng.integers(0, classes, n)
    x = centers[y] + rng.standard_normal((n, dim)).astype(np.float32) * 2.0
    return x.astype(np.float32), y


def demo(args: argparse.Namespace) -> int:
    """Train a softmax classifier with several fused optimizers and report accuracy and time."""
    import fusedlearn as fl

    info = fl.build_info()
    print(f"fusedlearn {info['version']}  isa={info['selected_isa']} (available {info['cpu_isa']})  "
          f"threads={info['openmp_threads']}  cuda_built={info['cuda_built']} devices={info['cuda_devices']}")
    dim, classes = 64, 10
    x, y = _make_blobs(6000, dim, classes, seed=args.seed)
    xtr, ytr, xte, yte = x[:5000], y[:5000], x[5000:], y[5000:]
    rules = {
        "SDProp": lambda ps: fl.optim.SDProp(ps, lr=1e-2),
        "Adam": lambda ps: fl.optim.Adam(ps, lr=1e-2),
        "AccSGD": lambda ps: fl.optim.AccSGD(ps, lr=1e-2, kappa=100.0, xi=5.0),
        "SGD+momentum": lambda ps: fl.optim.SGD(ps, lr=5e-2, momentum=0.9),
    }
    results = {}
    for name, make in rules.items():
        rng = np.random.default_rng(args.seed)
        w = (rng.standard_normal((dim, classes)) * 0.01).astype(np.float32)
        b = np.zeros(classes, np.float32)
        gw, gb = np.zeros_like(w), np.zeros_like(b)
        opt = make([(w, gw), (b, gb)])
        t0 = time.perf_counter()
        nb = len(xtr) // args.batch_size
        for epoch in range(1, args.epochs + 1):
            perm = rng.permutation(len(xtr))
            total = 0.0
            for k in range(nb):
                idx = perm[k * args.batch_size:(k + 1) * args.batch_size]
                loss, dlogits = _softmax_xent(xtr[idx] @ w + b, ytr[idx])
                np.matmul(xtr[idx].T, dlogits, out=gw)
                gb[:] = dlogits.sum(axis=0)
                opt.step()
                total += loss
            _progress(f"{name:>13}", epoch, args.epochs, f"loss {total / nb:.4f}")
        elapsed = time.perf_counter() - t0
        acc = float(((xte @ w + b).argmax(axis=1) == yte).mean())
        results[name] = {"test_accuracy": acc, "seconds": elapsed, "final_loss": total / nb}
    print()
    print(f"{'optimizer':>13}  {'test acc':>8}  {'loss':>7}  {'time':>7}")
    for name, r in results.items():
        print(f"{name:>13}  {r['test_accuracy']:8.3f}  {r['final_loss']:7.4f}  {r['seconds']:6.2f}s")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return 0


def info(args: argparse.Namespace) -> int:
    import fusedlearn as fl

    print(json.dumps(fl.build_info(), indent=2))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fusedlearn", description="Fast neural-network training with fused kernels.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("demo", help="train a small classifier with the fused optimizers and report accuracy and time")
    p.add_argument("--epochs", type=int, default=15)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", help="also write the results to this JSON file")
    p.set_defaults(func=demo)
    p = sub.add_parser("info", help="print what this build supports on this machine (ISA, CUDA, threads)")
    p.set_defaults(func=info)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
