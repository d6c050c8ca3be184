"""GRU training with plain SGD at growing learning rates: no treatment vs gradient clipping
vs Kanai et al.'s spectral constraint (NIPS 2017; fusedlearn.optim.GRUSpectralConstraint).

Task: character-level language modelling of the GNU GPL v3 text that Debian ships in
``/usr/share/common-licenses/GPL-3`` (package base-files), truncated BPTT with
k1 = k2 = 35, a 1-layer GRU, plain SGD (the paper's optimiser).  The last 10 % of the
text is held out.  Every (method, learning rate, seed) is one run; a run *diverges*
when a loss is non-finite or above 3 ln(V) (three times the loss of uniform guessing),
and training stops there.

    python examples/gru_explosion.py            # the full grid, ~5 min on 2 cores
    python examples/gru_explosion.py --quick    # a smoke test, < 30 s

Writes a Markdown table and a PNG plot (``--out``, default docs/results/gru_explosion.md).
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import time

# One BLAS thread per process: the SVDs are small and the runs go in parallel processes.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
try:
    import fusedlearn as fl
except ImportError:  # run from a source checkout with a dev build (python/fusedlearn/_C*.so)
    sys.path.insert(0, os.path.join(HERE, "..", "python"))
    import fusedlearn as fl  # noqa: E402

TEXT = "/usr/share/common-licenses/GPL-3"
METHODS = ("none", "clip 0.25", "clip 1", "clip 5", "spectral", "spectral+clip 1")


def load_text(path: str, batch: int):
    codes, vocab = fl.data.char_text(path)
    cut = int(len(codes) * 0.9)
    train = fl.data.batchify(codes[:cut], batch)
    val = fl.data.batchify(codes[cut:], batch)
    return train, val, len(vocab)


def evaluate(model, stream, k: int) -> float:
    """Mean per-character loss over a [T, B] stream, state carried, no training."""
    loss = fl.nn.SequenceCrossEntropyLoss()
    x, y = stream[:-1], stream[1:]
    h, total, n = None, 0.0, 0
    model.eval()
    for s in range(0, len(x), k):
        out, h = model(x[s:s + k], h)
        total += loss(out, y[s:s + k])[0] * len(out)
        n += len(out)
    model.train()
    return total / n


def parse_method(method: str) -> tuple:
    """``'none'``, ``'clip X'``, ``'spectral'`` or ``'spectral+clip X'`` -> (clip norm or None, spectral?)."""
    clip, spectral = None, False
    for part in method.split("+"):
        part = part.strip()
        if part == "spectral":
            spectral = True
        elif part.startswith("clip ") and len(part.split()) == 2:
            clip = float(part.split()[1])
        elif part != "none":
            raise ValueError(f"unknown method {method!r}")
    return clip, spectral


def run_one(cfg: dict) -> dict:
    fl.set_num_threads(1)
    train, val, V = load_text(cfg["text"], cfg["batch"])
    seed, H, emb = cfg["seed"], cfg["hidden"], cfg["embed"]
    gen = np.random.default_rng(seed)
    gru = fl.nn.GRU(emb, H, generator=gen)
    model = fl.nn.SequenceModel(gru, fl.nn.Linear(H, V, generator=gen), fl.nn.Embedding(V, emb, generator=gen))
    opt = fl.optim.SGD(model.parameters(), lr=cfg["lr"])
    method = cfg["method"]
    clip, spectral = parse_method(method)
    con = fl.optim.GRUSpectralConstraint(gru, delta=cfg["delta"]) if spectral else None
    t0 = time.perf_counter()
    hist = fl.train.train_tbptt(model, fl.nn.SequenceCrossEntropyLoss(), opt, train[:-1], train[1:], k1=cfg["k"],
                                epochs=cfg["epochs"], clip_norm=clip, constraint=con, progress=False,
                                diverge_above=3 * math.log(V))
    wall = time.perf_counter() - t0
    diverged = bool(hist["diverged"])
    sigma = fl.optim.GRUSpectralConstraint(gru).sigma_max()["weight_hh_l0"] if not diverged else math.nan
    return {
        **{k: cfg[k] for k in ("method", "lr", "seed")},
        "diverged": diverged,
        "diverged_at": hist["diverged_at"],
        "updates": hist["updates"],
        "train_loss": hist["epoch_loss"][-1] if not diverged else math.nan,
        "val_loss": evaluate(model, val, cfg["k"]) if not diverged else math.nan,
        "time": wall,
        "max_grad_norm": float(np.nanmax(hist["grad_norm"])) if hist["grad_norm"] else math.nan,
        "sigma_max": sigma,
        "projection_rate": con.projection_rate if con is not None else None,
        "svd_rate": con.svds / max(con.checks, 1) if con is not None else None,
    }


def summarise(results: list, lrs: list, methods: list) -> list:
    rows = []
    for m in methods:
        for lr in lrs:
            rs = [r for r in results if r["method"] == m and r["lr"] == lr]
            ok = [r for r in rs if not r["diverged"]]
            proj = [r["projection_rate"] for r in rs if r["projection_rate"] is not None]
            rows.append({
                "method": m, "lr": lr, "runs": len(rs), "diverged": len(rs) - len(ok),
                "val_loss": float(np.mean([r["val_loss"] for r in ok])) if ok else math.nan,
                "val_std": float(np.std([r["val_loss"] for r in ok])) if len(ok) > 1 else math.nan,
                "train_loss": float(np.mean([r["train_loss"] for r in ok])) if ok else math.nan,
                "time": float(np.mean([r["time"] for r in ok])) if ok else math.nan,
                "sigma": float(np.mean([r["sigma_max"] for r in ok])) if ok else math.nan,
                "max_grad": float(np.median([r["max_grad_norm"] for r in rs])),
                "proj": float(np.mean(proj)) if proj else None,
            })
    return rows


def fmt(v, spec=".3f") -> str:
    return "—" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, spec)


def write_report(path: str, rows: list, args, V: int, total_time: float, plot_name: str) -> None:
    lines = [
        "# GRU gradient explosions: no treatment vs gradient clipping vs the spectral constraint",
        "",
        f"Command: `python examples/gru_explosion.py{' --quick' if args.quick else ''}` "
        f"(total {total_time:.0f} s wall, {args.jobs} processes of 1 thread each).",
        "",
        f"Task: character-level LM on `{args.text}` (V = {V} characters; 90 % train / 10 % held out), "
        f"1-layer GRU (embedding {args.embed}, hidden {args.hidden}, torch convention), batch {args.batch}, "
        f"truncated BPTT k1 = k2 = {args.k}, {args.epochs} epochs, plain SGD.  Seeds: {args.seeds}.  "
        f"Spectral constraint: sigma_max(W_hn) <= 2 - delta, delta = {args.delta}.  A run diverges when "
        f"a loss is non-finite or above 3 ln V = {3 * math.log(V):.2f}.",
        "",
        "Columns: diverged runs / runs; held-out loss (nats per character, mean ± std over the runs that "
        "did not diverge; uniform guessing scores ln V = "
        f"{math.log(V):.2f}); final train loss (last epoch); wall time per run (s); sigma_max of W_hn at "
        "the end; median over runs of the largest gradient norm seen; fraction of steps the constraint "
        "projected.",
        "",
        "| method | lr | diverged | held-out loss | train loss | time (s) | sigma_max(W_hn) | max grad norm | "
        "projected |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        vl = fmt(r["val_loss"]) + ("" if math.isnan(r["val_std"]) else f" ± {r['val_std']:.3f}")
        lines.append(f"| {r['method']} | {r['lr']:g} | {r['diverged']}/{r['runs']} | {vl} | {fmt(r['train_loss'])} | "
                     f"{fmt(r['time'], '.1f')} | {fmt(r['sigma'], '.2f')} | {fmt(r['max_grad'], '.2f')} | "
                     f"{fmt(r['proj'], '.2f')} |")
    lines += ["", f"![held-out loss and divergences]({plot_name})", ""]
    with open(path, "w") as fh:
        fh.write("\n".join(lines))


def plot(path: str, rows: list, lrs: list, methods: list, V: int) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4))
    width = 0.8 / len(methods)
    for i, m in enumerate(methods):
        rs = [r for r in rows if r["method"] == m]
        a1.plot([r["lr"] for r in rs], [r["val_loss"] for r in rs], "o-", label=m)
        a2.bar(np.arange(len(lrs)) + (i - (len(methods) - 1) / 2) * width,
               [r["diverged"] / max(r["runs"], 1) for r in rs], width, label=m)
    a1.axhline(math.log(V), color="gray", ls=":", lw=1, label="uniform (ln V)")
    a1.set_xscale("log")
    a1.set_xlabel("SGD learning rate")
    a1.set_ylabel("held-out loss (nats/char), runs that trained")
    a1.legend(fontsize=8)
    a2.set_xticks(np.arange(len(lrs)), [f"{lr:g}" for lr in lrs])
    a2.set_xlabel("SGD learning rate")
    a2.set_ylabel("fraction of runs diverged")
    a2.set_ylim(0, 1.05)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="a smoke test: tiny grid, < 30 s")
    ap.add_argument("--text", default=TEXT)
    ap.add_argument("--lrs", default="1,3,5,10,20")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--embed", type=int, default=32)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--k", type=int, default=35)
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--delta", type=float, default=0.2)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--out", default=os.path.join(HERE, "..", "docs", "results", "gru_explosion.md"))
    args = ap.parse_args(argv)
    if args.quick:
        args.lrs, args.seeds, args.hidden, args.epochs = "1,30", "0", 32, 1
    if not os.path.isfile(args.text):
        print(f"gru_explosion: text file {args.text} not found (Debian's base-files ships it); use --text",
              file=sys.stderr)
        return 2
    lrs = [float(v) for v in args.lrs.split(",")]
    seeds = [int(v) for v in args.seeds.split(",")]
    methods = [m.strip() for m in args.methods.split(",")]
    for m in methods:
        try:
            parse_method(m)
        except ValueError as exc:
            ap.error(str(exc))
    common = {k: getattr(args, k) for k in ("text", "hidden", "embed", "batch", "k", "epochs", "delta")}
    cfgs = [{**common, "method": m, "lr": lr, "seed": s} for m in methods for lr in lrs for s in seeds]
    t0 = time.perf_counter()
    results = []
    if args.jobs > 1:
        import multiprocessing as mp
        with mp.get_context("fork").Pool(args.jobs) as pool:
            for r in pool.imap_unordered(run_one, cfgs):
                results.append(r)
                print(_line(r), flush=True)
    else:
        for c in cfgs:
            results.append(run_one(c))
            print(_line(results[-1]), flush=True)
    total = time.perf_counter() - t0
    _, _, V = load_text(args.text, args.batch)
    rows = summarise(results, lrs, methods)
    out = os.path.abspath(args.out)
    os.makedirs(os.path.dirname(out), exist_ok=True)
    png = os.path.splitext(out)[0] + ".png"
    plot(png, rows, lrs, methods, V)
    write_report(out, rows, args, V, total, os.path.basename(png))
    print(f"wrote {out} and {png} ({total:.0f} s)")
    return 0


def _line(r: dict) -> str:
    state = f"DIVERGED at update {r['diverged_at']}" if r["diverged"] else f"val {r['val_loss']:.3f}"
    return f"{r['method']:>10}  lr {r['lr']:<5g} seed {r['seed']}  {state}  ({r['time']:.1f} s)"


if __name__ == "__main__":
    sys.exit(main())
