"""Convolution layers and CNN training steps: fusedlearn vs PyTorch (CPU, oneDNN), same run.

Per layer (3x3 convolutions of the issue): forward, and forward + backward (input, weight and
bias gradients), float32.  Whole training steps (forward, loss, backward, SGD) of LeNet-5 at
batch 128 on 1x28x28 and of the small ResNet (ResNet-8) at batch 64 on 3x32x32, the same
architecture in torch.  Medians of repeated runs at 1 and 2 threads (fl.set_num_threads +
torch.set_num_threads); ratio = torch time / ours (> 1: we are faster).

    PYTHONPATH=python python3 bench/bench_conv.py [--repeat 15] [--threads 1 2] [--clock wall|cpu]
                                                  [--isolate auto|on|off] [--rounds 3]

One thread: ours and torch's calls alternate within each repetition, in one process.  Two or
more (--isolate auto): each library runs in processes of its own, alternated over --rounds
rounds, medians over them -- in one process torch's idle OpenMP threads spin on the second core
after each of its calls and take it from ours (the 32 -> 64 forward read 15.5 ms that way against
9.4 ms alone).
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

import fusedlearn as fl
from timing import PEERS as LIBS, add_clock_argument, add_isolation_arguments, isolating, run_isolated, timed

LAYERS = [  # (N, C, H, W) -> K channels, 3x3, stride, pad 1
    ((64, 3, 32, 32), 32, 1),
    ((64, 32, 32, 32), 64, 1),
    ((64, 64, 16, 16), 128, 2),
]


def bench_layers(torch, repeat, clock, libs=LIBS):
    F, tf = fl.functional, torch.nn.functional
    rows = []
    for (n, c, h, w), k, s in LAYERS:
        rng = np.random.default_rng(0)
        x = rng.standard_normal((n, c, h, w)).astype(np.float32)
        wt = (rng.standard_normal((k, c, 3, 3)) * 0.1).astype(np.float32)
        b = rng.standard_normal(k).astype(np.float32)
        y = F.conv2d(x, wt, b, s, 1)
        gy = rng.standard_normal(y.shape).astype(np.float32)
        tx, tw, tb = (torch.tensor(a, requires_grad=True) for a in (x, wt, b))
        tgy = torch.tensor(gy)

        def ours_f():
            F.conv2d(x, wt, b, s, 1)

        def ours_fb():
            F.conv2d(x, wt, b, s, 1)
            F.conv2d_backward(gy, x, wt, s, 1)

        def torch_f():
            with torch.no_grad():
                tf.conv2d(tx, tw, tb, s, 1)

        def torch_fb():
            tx.grad = tw.grad = tb.grad = None
            tf.conv2d(tx, tw, tb, s, 1).backward(tgy)

        name = f"{(n, c, h, w)}->{k} s{s}"
        for what, o, t in (("fwd", ours_f, torch_f), ("fwd+bwd", ours_fb, torch_fb)):
            rows.append((name, what, *timed((o, t), libs, repeat, clock)))
    return rows


def torch_lenet(torch):
    tnn = torch.nn
    return tnn.Sequential(
        tnn.Conv2d(1, 6, 5, padding=2), tnn.ReLU(), tnn.MaxPool2d(2), tnn.Conv2d(6, 16, 5), tnn.ReLU(),
        tnn.MaxPool2d(2), tnn.Flatten(), tnn.Linear(400, 120), tnn.ReLU(), tnn.Linear(120, 84), tnn.ReLU(),
        tnn.Linear(84, 10))


def torch_resnet(torch, width=16):
    tnn = torch.nn

    class Block(tnn.Module):
        def __init__(self, i, o, s):
            super().__init__()
            self.conv1 = tnn.Conv2d(i, o, 3, s, 1, bias=False)
            self.bn1 = tnn.BatchNorm2d(o)
            self.conv2 = tnn.Conv2d(o, o, 3, 1, 1, bias=False)
            self.bn2 = tnn.BatchNorm2d(o)
            self.downsample = (tnn.Sequential(tnn.Conv2d(i, o, 1, s, bias=False), tnn.BatchNorm2d(o))
                               if s != 1 or i != o else None)

        def forward(self, x):
            out = self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x)))))
            return torch.relu(out + (x if self.downsample is None else self.downsample(x)))

    return tnn.Sequential(tnn.Conv2d(3, width, 3, 1, 1, bias=False), tnn.BatchNorm2d(width), tnn.ReLU(),
                          Block(width, width, 1), Block(width, 2 * width, 2), Block(2 * width, 4 * width, 2),
                          tnn.AdaptiveAvgPool2d(1), tnn.Flatten(), tnn.Linear(4 * width, 10))


def bench_steps(torch, repeat, clock, libs=LIBS):
    rows = []
    for name, ours, theirs, shape in (
            ("LeNet-5 step, batch 128, 1x28x28", fl.models.lenet5(seed=0), torch_lenet(torch), (128, 1, 28, 28)),
            ("ResNet-8 step, batch 64, 3x32x32", fl.models.resnet_small(seed=0), torch_resnet(torch), (64, 3, 32, 32))):
        rng = np.random.default_rng(0)
        x = rng.random(shape, dtype=np.float32)
        y = rng.integers(0, 10, shape[0])
        loss = fl.nn.CrossEntropyLoss()
        opt = fl.optim.SGD(ours.parameters(), lr=0.01, momentum=0.9)
        tx, ty = torch.tensor(x), torch.tensor(y)
        topt = torch.optim.SGD(theirs.parameters(), lr=0.01, momentum=0.9)
        tloss = torch.nn.CrossEntropyLoss()

        def ours_step():
            out = ours(x)
            _, g = loss(out, y)
            opt.zero_grad()
            ours.backward_params(g)  # as torch: no gradient for the input batch
            opt.step()

        def torch_step():
            topt.zero_grad()
            tloss(theirs(tx), ty).backward()
            topt.step()

        rows.append((name, "train step", *timed((ours_step, torch_step), libs, repeat, clock)))
    return rows


def worker(nt, repeat, clock, only):
    """One thread count, only one library timed: JSON rows for run_isolated."""
    import torch

    fl.set_num_threads(nt)
    torch.set_num_threads(nt)
    libs = (only,)
    for name, what, to, tt in bench_layers(torch, repeat, clock, libs) + bench_steps(torch, repeat, clock, libs):
        print(json.dumps({"name": name, "what": what, "nt": nt, "t": {only: to if only == "ours" else tt}}),
              flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeat", type=int, default=15)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    add_clock_argument(ap)
    add_isolation_arguments(ap, LIBS)
    args = ap.parse_args()
    if args.worker is not None:
        worker(args.worker, args.repeat, args.clock, args.only)
        return
    import torch

    print(f"fusedlearn {fl.__version__} isa={fl.get_isa()}  torch {torch.__version__} "
          f"(mkldnn={torch.backends.mkldnn.is_available()})")
    print(f"{'case':44s} {'what':10s} {'thr':>3s} {'ours ms':>9s} {'torch ms':>9s} {'ratio':>6s}")
    for nt in args.threads:
        if isolating(args, nt):
            env = dict(os.environ, OMP_NUM_THREADS=str(nt), MKL_NUM_THREADS=str(nt))
            cmd = [sys.executable, os.path.abspath(__file__), "--worker", str(nt), "--repeat", str(args.repeat),
                   "--clock", args.clock]
            rows = [(r["name"], r["what"], r["t"]["ours"], r["t"]["torch"])
                    for r in run_isolated(cmd, LIBS, args.rounds, env)]
            note = f"  (own processes, medians of {args.rounds} rounds)"
        else:
            fl.set_num_threads(nt)
            torch.set_num_threads(nt)
            rows = bench_layers(torch, args.repeat, args.clock) + bench_steps(torch, args.repeat, args.clock)
            note = ""
        for name, what, to, tt in rows:
            print(f"{name:44s} {what:10s} {nt:3d} {to * 1e3:9.2f} {tt * 1e3:9.2f} {tt / to:6.2f}x{note}", flush=True)


if __name__ == "__main__":
    main()
