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


def demo(args: argparse.Namespace) -> int:
    """Train an MLP on scikit-learn's digits with SDProp; report test accuracy and time; plot the curves."""
    import fusedlearn as fl

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
    p.set_defaults(func=demo)
    p = sub.add_parser("info", help="print what this build supports on this machine (ISA, CUDA, threads)")
    p.set_defaults(func=info)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
