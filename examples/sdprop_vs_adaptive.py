#!/usr/bin/env python3
"""SDProp vs RMSprop vs Adam: the comparison of Ida, Fujiwara & Iwamura (IJCAI 2017; NTT Technical
Review, seed 000) on data available offline.

Set-ups (each a fixed data split; the seeds vary the initialisation and the batch order):

- ``demo_fashion``: the authors' own demo (``torch7-sdprop``, ``demos-mnist/train-on-mnist.lua``): the
  Torch convnet on 32x32 inputs, 2,000 training / 1,000 test images, batch 10, 10 epochs, here on
  Fashion-MNIST (``demo_mnist`` too when MNIST's IDX files are found: ``--mnist DIR`` or
  ``$FUSEDLEARN_MNIST``);
- ``lenet5_fashion``: ``fl.models.lenet5`` on a Fashion-MNIST subset;
- ``digits_mlp``: an MLP on scikit-learn's 8x8 digits, also at batch sizes 10 / 32 / 128.

Each optimizer runs at its default learning rate and at the one tuned on a validation split (seed 0,
a small grid); accuracy per epoch, epochs to a target accuracy, final accuracy, over 5 seeds.
Writes ``docs/results/sdprop.md`` (tables and reading), ``sdprop.png`` (test accuracy per epoch,
mean ± std) and ``sdprop.json`` (every run's curves).

    python examples/sdprop_vs_adaptive.py            # the full run (~10-20 min on 2 shared cores)
    python examples/sdprop_vs_adaptive.py --quick    # a smoke run (< 1 min), written to a temp dir
"""
from __future__ import annotations

import argparse
import json
import math
import multiprocessing as mp
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
try:
    import fusedlearn as fl
except ImportError:  # not installed: the source tree with its built module (./dev_build.sh)
    sys.path.insert(0, str(ROOT / "python"))
    import fusedlearn as fl
from fusedlearn import nn  # noqa: E402

OPTIMIZERS = ("SDProp", "RMSprop", "Adam")
# fusedlearn's (= PyTorch's) defaults; SDProp's are those of the authors' sdprop.lua (lr 1e-3, gamma 0.99)
DEFAULT_LR = {"SDProp": 1e-3, "RMSprop": 1e-2, "Adam": 1e-3}

# ---- settings -----------------------------------------------------------------------------------
# n_train / n_val / n_test: sizes of the fixed splits; batch_sizes: the first is the set-up's own,
# the others form the batch-size sweep (each re-tuned on the grid, and at the defaults).
SETUPS = {
    "demo_fashion": dict(data="fashion", model="demo_cnn", n_train=2000, n_val=1000, n_test=1000,
                         batch_sizes=(10,), epochs=10),
    "demo_mnist": dict(data="mnist", model="demo_cnn", n_train=2000, n_val=1000, n_test=1000,
                       batch_sizes=(10,), epochs=10),
    "lenet5_fashion": dict(data="fashion", model="lenet5", n_train=6000, n_val=2000, n_test=2000,
                           batch_sizes=(32,), epochs=10),
    "digits_mlp": dict(data="digits", model="mlp", n_train=None, n_val=300, n_test=None,
                       batch_sizes=(32, 10, 128), epochs=20),
}
FULL = dict(setups=("demo_fashion", "demo_mnist", "lenet5_fashion", "digits_mlp"), seeds=(0, 1, 2, 3, 4),
            grid=(1e-4, 3e-4, 1e-3, 3e-3, 1e-2), target_frac=0.98, select_last=3, overrides={})
QUICK = dict(FULL, setups=("demo_fashion", "digits_mlp"), seeds=(0, 1), grid=(1e-3, 3e-3), select_last=1,
             overrides={"demo_fashion": dict(n_train=300, n_val=200, n_test=200, epochs=2),
                        "demo_mnist": dict(n_train=300, n_val=200, n_test=200, epochs=2),
                        "lenet5_fashion": dict(n_train=500, n_val=200, n_test=200, epochs=2),
                        "digits_mlp": dict(epochs=5, batch_sizes=(32, 128))})
LABELS = {"demo_fashion": "Torch demo convnet, Fashion-MNIST 2k", "demo_mnist": "Torch demo convnet, MNIST 2k",
          "lenet5_fashion": "LeNet-5, Fashion-MNIST subset", "digits_mlp": "MLP, digits 8x8"}

_DATA: dict = {}


def setup_cfg(cfg: dict, name: str) -> dict:
    return dict(SETUPS[name], **cfg["overrides"].get(name, {}))


# ---- data ---------------------------------------------------------------------------------------
def _mnist_dir(arg):
    for c in (arg, os.environ.get("FUSEDLEARN_MNIST"), "/usr/share/datasets/mnist"):
        if c and Path(c).is_dir():
            try:
                fl.data.mnist(c)
                return str(c)
            except (FileNotFoundError, ValueError):
                continue
    return None


def _standardise(tr, *others):
    """Global mean / std of the training images (as the Torch demo's normalizeGlobal)."""
    mu, sd = float(tr.mean()), float(tr.std())
    return [((a - mu) / sd).astype(np.float32) for a in (tr, *others)]


def load_setup(name: str, s: dict, mnist_dir=None) -> dict:
    """Fixed train / validation / test arrays of one set-up."""
    if s["data"] == "digits":
        tr, te = fl.data.digits(flatten=True)
        rng = np.random.default_rng(12345)
        perm = rng.permutation(len(tr))
        val, trn = perm[:s["n_val"]], perm[s["n_val"]:]
        if s["n_train"] is not None:
            trn = trn[:s["n_train"]]
        tsel = np.arange(len(te)) if s["n_test"] is None else np.arange(min(s["n_test"], len(te)))
        return dict(x=tr.x[trn], y=tr.y[trn], xval=tr.x[val], yval=tr.y[val], xte=te.x[tsel], yte=te.y[tsel])
    tr, te = fl.data.fashion_mnist() if s["data"] == "fashion" else fl.data.mnist(mnist_dir)
    n, nv, nt = s["n_train"], s["n_val"], s["n_test"]
    if s["model"] == "demo_cnn":
        # the demo's split: the first 2,000 training and the first 1,000 test images (the next 1,000
        # training images validate); 28x28 zero-padded to the demo's 32x32
        trn, val, tst = np.arange(n), np.arange(n, n + nv), np.arange(nt)
        pad = ((0, 0), (0, 0), (2, 2), (2, 2))
        x, xv, xt = (np.pad(a, pad) for a in (tr.x[trn], tr.x[val], te.x[tst]))
        x, xv, xt = _standardise(x, xv, xt)
    else:
        perm = np.random.default_rng(2017).permutation(len(tr))
        trn, val = perm[:n], perm[n:n + nv]
        tst = np.random.default_rng(2018).permutation(len(te))[:nt]
        x, xv, xt = tr.x[trn], tr.x[val], te.x[tst]
    return dict(x=np.ascontiguousarray(x), y=tr.y[trn], xval=np.ascontiguousarray(xv), yval=tr.y[val],
                xte=np.ascontiguousarray(xt), yte=te.y[tst])


# ---- models -------------------------------------------------------------------------------------
def build(kind: str, seed: int):
    g = [seed * 100 + i for i in range(8)]
    if kind == "demo_cnn":  # train-on-mnist.lua: 32x32 -> 28 -> 10 -> 6 -> 3
        return nn.Sequential(nn.Conv2d(1, 32, 5, activation="tanh", generator=g[0]),
                             nn.MaxPool2d(3, 3, padding=1),
                             nn.Conv2d(32, 64, 5, activation="tanh", generator=g[1]),
                             nn.MaxPool2d(2),
                             nn.Flatten(),
                             nn.Linear(64 * 3 * 3, 200, activation="tanh", generator=g[2]),
                             nn.Linear(200, 10, generator=g[3]))
    if kind == "lenet5":
        return fl.models.lenet5(seed=seed)
    if kind == "mlp":
        return nn.Sequential(nn.Linear(64, 128, activation="relu", generator=g[0]),
                             nn.Linear(128, 128, activation="relu", generator=g[1]),
                             nn.Linear(128, 128, activation="relu", generator=g[2]),
                             nn.Linear(128, 10, generator=g[3]))
    raise ValueError(f"unknown model {kind!r}")


def make_optimizer(name: str, params, lr: float):
    if name == "SDProp":
        return fl.optim.SDProp(params, lr=lr)
    if name == "RMSprop":
        return fl.optim.RMSprop(params, lr=lr)
    if name == "Adam":
        return fl.optim.Adam(params, lr=lr)
    raise ValueError(f"unknown optimizer {name!r}; expected one of {OPTIMIZERS}")


# ---- one training run ---------------------------------------------------------------------------
class _TestCurve(fl.train.Callback):
    """Test accuracy after every epoch (``fit`` evaluates the validation split itself)."""

    def __init__(self, x, y) -> None:
        self.x, self.y, self.acc = x, y, []

    def on_epoch_end(self, epoch, logs, state):
        self.acc.append(fl.train.evaluate(state["model"], nn.CrossEntropyLoss(), (self.x, self.y),
                                          batch_size=1000)["accuracy"])


def run_one(job: dict) -> dict:
    t0 = time.perf_counter()
    d = _DATA[job["setup"]]
    model = build(job["model"], job["seed"])
    opt = make_optimizer(job["opt"], model.parameters(), job["lr"])
    test = _TestCurve(d["xte"], d["yte"])
    hist = fl.train.fit(model, nn.CrossEntropyLoss(), opt, (d["x"], d["y"]), (d["xval"], d["yval"]),
                        epochs=job["epochs"], batch_size=job["bs"], seed=job["seed"], progress=False,
                        callbacks=[test])
    out = dict(job)
    out.update(train_loss=[float(v) for v in hist["loss"]], val_acc=[float(v) for v in hist["val_accuracy"]],
               test_acc=[float(v) for v in test.acc], seconds=time.perf_counter() - t0)
    return out


def _init_worker(data):
    global _DATA
    _DATA = data
    fl.set_num_threads(1)


def run_jobs(jobs: list, data: dict, workers: int, label: str) -> list:
    # longest first, so the workers finish together
    jobs = sorted(jobs, key=lambda j: -j["cost"])
    t0 = time.perf_counter()
    results = []
    if not jobs:
        return results
    if workers <= 1:
        _init_worker(data)
        it = map(run_one, jobs)
    else:
        pool = mp.get_context("fork").Pool(workers, initializer=_init_worker, initargs=(data,))
        it = pool.imap_unordered(run_one, jobs)
    try:
        for i, r in enumerate(it, 1):
            results.append(r)
            if i % max(1, len(jobs) // 8) == 0 or i == len(jobs):
                print(f"  {label}: {i}/{len(jobs)} runs, {time.perf_counter() - t0:.0f} s", flush=True)
    finally:
        if workers > 1:
            pool.close()
            pool.join()
    return results


# ---- the experiment -----------------------------------------------------------------------------
_COST = {"demo_cnn": 20.0, "lenet5": 1.0, "mlp": 0.05}  # rough seconds per epoch of a 2,000-image set


def _job(name, s, opt, lr, bs, seed):
    n = len(_DATA[name]["y"])
    cost = _COST[s["model"]] * s["epochs"] * n / 2000 * (1.0 + 3.0 / bs)
    return dict(setup=name, model=s["model"], opt=opt, lr=float(lr), bs=int(bs), seed=int(seed),
                epochs=int(s["epochs"]), cost=cost)


def _key(r):
    return (r["setup"], r["opt"], r["lr"], r["bs"], r["seed"])


def select(runs: list, last: int) -> float:
    """The learning rate of the best mean validation accuracy over the last ``last`` epochs (ties: the
    smaller rate)."""
    score = {r["lr"]: float(np.mean(r["val_acc"][-last:])) for r in runs}
    return min(score, key=lambda lr: (-round(score[lr], 9), lr))


def experiment(cfg: dict, setups: list, workers: int, reuse=None) -> dict:
    """Phase 1: the grid at seed 0 and the defaults at every seed; phase 2: the tuned rates at the
    remaining seeds (seed 0 is its tuning run, which also recorded the test curve).  ``reuse``: runs of an
    earlier identical configuration (keyed by set-up, optimizer, lr, batch, seed) taken instead of rerun."""
    reuse = reuse or {}
    phase1 = {}
    for name in setups:
        s = setup_cfg(cfg, name)
        for bs in s["batch_sizes"]:
            for opt in OPTIMIZERS:
                for lr in cfg["grid"]:
                    j = _job(name, s, opt, lr, bs, cfg["seeds"][0])
                    phase1[_key(j)] = j
                for seed in cfg["seeds"]:
                    j = _job(name, s, opt, DEFAULT_LR[opt], bs, seed)
                    phase1[_key(j)] = j
    done = {k: reuse[k] for k in phase1 if k in reuse}
    todo = [j for k, j in phase1.items() if k not in done]
    done.update({_key(r): r for r in run_jobs(todo, _DATA, workers, "grid + defaults")})
    chosen = {}
    phase2 = {}
    for name in setups:
        s = setup_cfg(cfg, name)
        for bs in s["batch_sizes"]:
            for opt in OPTIMIZERS:
                grid_runs = [done[(name, opt, float(lr), bs, cfg["seeds"][0])] for lr in cfg["grid"]]
                lr = select(grid_runs, cfg["select_last"])
                chosen[f"{name}|{bs}|{opt}"] = lr
                for seed in cfg["seeds"]:
                    j = _job(name, s, opt, lr, bs, seed)
                    if _key(j) in reuse and _key(j) not in done:
                        done[_key(j)] = reuse[_key(j)]
                    elif _key(j) not in done:
                        phase2[_key(j)] = j
    for r in run_jobs(list(phase2.values()), _DATA, workers, "tuned rates"):
        done[_key(r)] = r
    return dict(runs=list(done.values()), chosen=chosen, reused=sum(_key(r) in reuse for r in done.values()))


# ---- analysis -----------------------------------------------------------------------------------
def curves(runs, setup, opt, lr, bs, seeds, key="test_acc") -> np.ndarray:
    """[seeds, epochs] accuracy curves of one configuration."""
    by = {(r["setup"], r["opt"], r["lr"], r["bs"], r["seed"]): r for r in runs}
    return np.array([by[(setup, opt, float(lr), bs, s)][key] for s in seeds])


def epochs_to(curve, target) -> int | None:
    hit = np.nonzero(np.asarray(curve) >= target)[0]
    return int(hit[0]) + 1 if len(hit) else None


def summarise(out: dict, cfg: dict, setups: list) -> dict:
    """Per set-up and batch size: the curves of each optimizer (tuned and default), the target and the
    epochs to reach it."""
    runs, seeds = out["runs"], tuple(cfg["seeds"])
    summary = {}
    for name in setups:
        s = setup_cfg(cfg, name)
        for bs in s["batch_sizes"]:
            entry = {}
            for opt in OPTIMIZERS:
                tuned = out["chosen"][f"{name}|{bs}|{opt}"]
                for mode, lr in (("tuned", tuned), ("default", DEFAULT_LR[opt])):
                    c = curves(runs, name, opt, lr, bs, seeds)
                    entry[(opt, mode)] = dict(lr=lr, curves=c)
            # the peak, not the last epoch: one seed collapsing at the end must not drag the target down
            target = cfg["target_frac"] * min(entry[(o, "tuned")]["curves"].max(axis=1).mean() for o in OPTIMIZERS)
            target = math.floor(1000 * target) / 1000
            for v in entry.values():
                v["epochs_to"] = [epochs_to(c, target) for c in v["curves"]]
            summary[(name, bs)] = dict(target=target, entry=entry, epochs=s["epochs"])
    return summary


def _ms(a, scale=100.0, nd=1) -> str:
    a = np.asarray(a, dtype=float)
    if a.size == 0:
        return "–"
    sd = a.std(ddof=1) if a.size > 1 else 0.0
    return f"{scale * a.mean():.{nd}f} ± {scale * sd:.{nd}f}"


def _ept(v, epochs) -> str:
    hit = [e for e in v if e is not None]
    if not hit:
        return f"> {epochs} (0/{len(v)})"
    s = f"{np.mean(hit):.1f}"
    return s if len(hit) == len(v) else f"{s} ({len(hit)}/{len(v)} reached)"


def _paired(entry, mode, other) -> tuple:
    """Final test accuracy of SDProp minus ``other``'s, paired by seed: (mean, std, wins of SDProp)."""
    a, b = entry[("SDProp", mode)]["curves"][:, -1], entry[(other, mode)]["curves"][:, -1]
    d = a - b
    return float(d.mean()), float(d.std(ddof=1) if len(d) > 1 else 0.0), int((d > 0).sum()), len(d)


# ---- report -------------------------------------------------------------------------------------
def write_report(out, cfg, setups, path_md: Path, path_png: Path, wall: float, quick: bool, skipped) -> dict:
    summary = summarise(out, cfg, setups)
    nseeds = len(cfg["seeds"])
    lines = ["# SDProp vs RMSprop vs Adam", ""]
    if quick:
        lines += ["**Quick (smoke) run: tiny settings, the numbers are not meaningful.**", ""]
    lines += [
        "The claim of Ida, Fujiwara & Iwamura (IJCAI 2017; NTT Technical Review, seed 000): SDProp, which "
        "divides the gradient by the running *standard deviation* of past gradients instead of their root "
        "mean square, trains more efficiently than RMSprop and Adam. Reproduced with "
        "`examples/sdprop_vs_adaptive.py` (`fl.optim.SDProp`, `RMSprop`, `Adam`, trained by `fl.train.fit`). "
        f"Test accuracy in % (mean ± std over {nseeds} seeds; the seeds vary the initialisation and the batch "
        "order, the data split is fixed). \"tuned\": the learning rate picked from the grid "
        f"{list(cfg['grid'])} by the validation accuracy of seed 0 (mean of the last {cfg['select_last']} "
        "epochs); \"default\": lr " + ", ".join(f"{o} {DEFAULT_LR[o]:g}" for o in OPTIMIZERS) + ". "
        f"Target: {100 * cfg['target_frac']:.0f} % of the lowest of the three tuned optimizers' mean best-epoch "
        "test accuracy in that set-up; \"epochs to target\": the first epoch whose test accuracy reaches "
        "it (mean over the seeds that did).", ""]
    if skipped:
        lines += ["Not run here: " + "; ".join(f"`{k}` ({v})" for k, v in skipped.items()) + ".", ""]
    checkpoints = lambda E: sorted({1, min(3, E), E // 2 or 1, E})  # noqa: E731
    for (name, bs), sm in summary.items():
        E = sm["epochs"]
        ep = checkpoints(E)
        lines += [f"## {LABELS[name]}, batch {bs} (`{name}`)", "",
                  f"Target accuracy {100 * sm['target']:.1f} %.", "",
                  "| optimizer | lr | " + " | ".join(f"epoch {e}" for e in ep) +
                  " | best epoch | epochs to target |",
                  "|---|---:|" + "---:|" * len(ep) + "---:|---:|"]
        for mode in ("tuned", "default"):
            for opt in OPTIMIZERS:
                v = sm["entry"][(opt, mode)]
                c = v["curves"]
                lines.append(f"| {opt} ({mode}) | {v['lr']:g} | " +
                             " | ".join(_ms(c[:, e - 1]) for e in ep) +
                             f" | {_ms(c.max(axis=1))} | {_ept(v['epochs_to'], E)} |")
        lines.append("")
        for mode in ("tuned", "default"):
            parts = []
            for other in ("RMSprop", "Adam"):
                m, sd, w, n = _paired(sm["entry"], mode, other)
                parts.append(f"vs {other} {100 * m:+.1f} ± {100 * sd:.1f} points (SDProp higher in {w}/{n} seeds)")
            lines.append(f"- {mode}: final SDProp accuracy, paired by seed, " + "; ".join(parts) + ".")
        lines.append("")
    # batch-size sensitivity
    sweep = [n for n in setups if len(setup_cfg(cfg, n)["batch_sizes"]) > 1]
    for name in sweep:
        bss = sorted(setup_cfg(cfg, name)["batch_sizes"])
        lines += [f"## Batch-size sensitivity: {LABELS[name]}", "",
                  "Final test accuracy (%); each batch size trains the same number of epochs (so fewer steps "
                  "at larger batches). Tuned: re-tuned per batch size; default: one fixed rate.", "",
                  "| optimizer | " + " | ".join(f"batch {b}" for b in bss) + " | spread (max − min of means) |",
                  "|---|" + "---:|" * len(bss) + "---:|"]
        for mode in ("tuned", "default"):
            for opt in OPTIMIZERS:
                finals = [summary[(name, b)]["entry"][(opt, mode)]["curves"][:, -1] for b in bss]
                lrs = [summary[(name, b)]["entry"][(opt, mode)]["lr"] for b in bss]
                means = [f.mean() for f in finals]
                cells = [f"{_ms(f)} (lr {lr:g})" if mode == "tuned" else _ms(f) for f, lr in zip(finals, lrs)]
                lines.append(f"| {opt} ({mode}) | " + " | ".join(cells) +
                             f" | {100 * (max(means) - min(means)):.1f} |")
        lines.append("")
    lines += _overview(summary)
    discussion = path_md.parent / "sdprop_discussion.md"
    if discussion.is_file() and not quick:  # hand-written reading of the results, kept across re-runs
        lines += [discussion.read_text().strip(), ""]
    lines += ["## Settings", ""]
    for name in setups:
        s = setup_cfg(cfg, name)
        d = out["sizes"][name]
        lines.append(f"- `{name}`: {_describe(name, s)} Train / validation / test images: "
                     f"{d['train']} / {d['val']} / {d['test']}; batch {', '.join(map(str, s['batch_sizes']))}; "
                     f"{s['epochs']} epochs.")
    lines += [
        "- Optimizers: `fl.optim.SDProp` (the official `sdprop.lua` update: γ = 0.99, ε = 1e-8 added after "
        "the square root, the step scaled by sqrt(1 − γ^t)), `fl.optim.RMSprop` (α = 0.99, ε = 1e-8, not "
        "centred, no momentum), `fl.optim.Adam` (β = 0.9, 0.999, ε = 1e-8); no weight decay, no schedule. "
        "Cross-entropy loss, torch-style initialisation seeded per seed.",
        f"- Learning-rate tuning: one run per grid value at seed {cfg['seeds'][0]}, scored on the validation "
        "split (disjoint from training and test), then the chosen rate for all seeds (seed 0's run is reused). "
        "The defaults are run at every seed whether or not they are in the grid.",
        f"- Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores shared with other "
        f"jobs; fusedlearn {fl.__version__}, ISA {fl.get_isa()}, 1 thread per worker, {out['workers']} "
        f"worker(s). Wall time of this run: {wall / 60:.1f} min"
        + (f" ({out['reused']} of the {len(out['runs'])} runs taken from an earlier run of the same "
           "settings with a smaller grid, `--reuse`)" if out.get("reused") else "") + ".",
        "- Reproduce: `nice -n 10 python examples/sdprop_vs_adaptive.py`; rewrite this file and the figure "
        "from the saved runs: `--from-json docs/results/sdprop.json`.", ""]
    path_md.parent.mkdir(parents=True, exist_ok=True)
    path_md.write_text("\n".join(lines))
    plot(summary, cfg, setups, path_png)
    return summary


def _overview(summary) -> list:
    """One row per set-up and batch size: which optimizer is ahead early, at the end and to the target."""
    def best(entry, mode, score):
        vals = {o: score(entry[(o, mode)]) for o in OPTIMIZERS}
        top = max(vals.values())
        return "/".join(o for o in OPTIMIZERS if vals[o] >= top - 1e-12), vals

    def speed(v):  # fewer epochs to the target is better; seeds that never reach it count as epochs + 1
        return -float(np.mean([e if e is not None else v["curves"].shape[1] + 1 for e in v["epochs_to"]]))

    lines = ["## Overview", "",
             "Which optimizer is ahead, by mean over seeds (ties listed together). Early: test accuracy after "
             "the first epoch; final: after the last; speed: epochs to the target (a seed that never reaches "
             "it counts as one epoch more than the run).", "",
             "| set-up | batch | lr | early | final | speed |", "|---|---:|---|---|---|---|"]
    for (name, bs), sm in summary.items():
        for mode in ("tuned", "default"):
            e = best(sm["entry"], mode, lambda v: float(v["curves"][:, 0].mean()))[0]
            f = best(sm["entry"], mode, lambda v: float(v["curves"][:, -1].mean()))[0]
            s = best(sm["entry"], mode, speed)[0]
            lines.append(f"| `{name}` | {bs} | {mode} | {e} | {f} | {s} |")
    return lines + [""]


def _describe(name, s) -> str:
    if s["model"] == "demo_cnn":
        data = "Fashion-MNIST" if s["data"] == "fashion" else "MNIST"
        return (f"{data}, the demo's split (the first training images train, the next ones validate, the "
                "first test images test), zero-padded to 32x32 and standardised by the training set's global "
                "mean and std; the demo's network Conv5x5(32)+tanh - MaxPool3 (stride 3, pad 1) - "
                "Conv5x5(64)+tanh - MaxPool2 - Linear 576→200+tanh - Linear 10.")
    if s["model"] == "lenet5":
        return ("Fashion-MNIST, a fixed random subset of the training set (validation drawn disjoint from "
                "it) and of the test set, pixels in [0, 1]; `fl.models.lenet5` (ReLU, max pooling).")
    return ("scikit-learn's 8x8 digits, `fl.data.digits()`'s split (1438 train / 359 test), a fixed random "
            "validation subset taken out of the training part; MLP 64 → 3 × (128 + ReLU) → 10.")


def plot(summary, cfg, setups, path):
    # The history helpers (fl.train.plot_history) draw one run's loss and accuracy; this needs the mean and
    # spread over seeds of several optimizers per panel, so matplotlib's Agg canvas is used directly.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator
    panels = [(n, setup_cfg(cfg, n)["batch_sizes"][0]) for n in setups]
    sweep = [n for n in setups if len(setup_cfg(cfg, n)["batch_sizes"]) > 1]
    npan = len(panels) + len(sweep)
    fig = Figure(figsize=(4.4 * npan, 3.8), dpi=100)
    FigureCanvasAgg(fig)
    colours = {"SDProp": "C3", "RMSprop": "C0", "Adam": "C2"}
    for i, (name, bs) in enumerate(panels):
        ax = fig.add_subplot(1, npan, i + 1)
        sm = summary[(name, bs)]
        for mode, ls in (("tuned", "-"), ("default", "--")):
            for opt in OPTIMIZERS:
                v = sm["entry"][(opt, mode)]
                c = 100 * v["curves"]
                x = np.arange(1, c.shape[1] + 1)
                m, sd = c.mean(axis=0), c.std(axis=0)
                ax.plot(x, m, ls, color=colours[opt], marker="o", ms=2.5, lw=1.2,
                        label=f"{opt} {mode} ({v['lr']:g})")
                if mode == "tuned":
                    ax.fill_between(x, m - sd, m + sd, color=colours[opt], alpha=0.15, lw=0)
        ax.axhline(100 * sm["target"], color="0.5", lw=0.8, ls=":")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        lo = max(0.0, min(100 * v["curves"].mean(axis=0).min() for v in sm["entry"].values()) - 2)
        ax.set_ylim(lo, min(100.5, ax.get_ylim()[1]))
        ax.set_xlabel("epoch")
        ax.set_ylabel("test accuracy (%)")
        ax.set_title(f"{LABELS[name]}, batch {bs}", fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6, loc="lower right")
    for k, name in enumerate(sweep):
        ax = fig.add_subplot(1, npan, len(panels) + k + 1)
        bss = sorted(setup_cfg(cfg, name)["batch_sizes"])
        for mode, ls in (("tuned", "-"), ("default", "--")):
            for opt in OPTIMIZERS:
                f = [100 * summary[(name, b)]["entry"][(opt, mode)]["curves"][:, -1] for b in bss]
                ax.errorbar(bss, [a.mean() for a in f], yerr=[a.std() for a in f], ls=ls, marker="o", ms=3,
                            capsize=2, color=colours[opt], label=f"{opt} {mode}")
        ax.set_ylim(None, min(100.5, ax.get_ylim()[1]))
        ax.set_xscale("log")
        ax.minorticks_off()
        ax.set_xticks(bss)
        ax.set_xticklabels([str(b) for b in bss])
        ax.set_xlabel("batch size")
        ax.set_ylabel("final test accuracy (%)")
        ax.set_title(f"batch-size sweep: {LABELS[name]}", fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)


# ---- main ---------------------------------------------------------------------------------------
def available(cfg: dict, wanted: list, mnist_arg) -> tuple:
    """The set-ups whose data exist here, their arrays, and why the others were skipped."""
    data, skipped = {}, {}
    mnist_dir = _mnist_dir(mnist_arg)
    for name in wanted:
        s = setup_cfg(cfg, name)
        try:
            if s["data"] == "mnist" and mnist_dir is None:
                raise FileNotFoundError("MNIST's IDX files not found (--mnist DIR or $FUSEDLEARN_MNIST)")
            data[name] = load_setup(name, s, mnist_dir)
        except (FileNotFoundError, ImportError) as exc:
            skipped[name] = str(exc).split(". ")[0]
    return list(data), data, skipped


def _reusable(path, cfg: dict, data: dict) -> dict:
    """The runs of a saved sdprop.json whose set-up has the same settings and data sizes as now (a run
    is deterministic given its key: one thread, seeded initialisation and batch order)."""
    if path is None:
        return {}
    saved = json.loads(Path(path).read_text())
    ok = {n for n in data if n in saved.get("sizes", {})
          and saved["sizes"][n] == dict(train=len(data[n]["y"]), val=len(data[n]["yval"]), test=len(data[n]["yte"]))
          and setup_cfg(saved["settings"], n) == setup_cfg(cfg, n)}
    runs = {}
    for r in saved["runs"]:
        r["lr"] = float(r["lr"])
        if r["setup"] in ok:
            runs[_key(r)] = r
    print(f"reusing {len(runs)} runs of {path}")
    return runs


def _from_json(obj):
    return obj.tolist() if hasattr(obj, "tolist") else str(obj)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="smoke run (< 1 min); writes to a temp dir by default")
    ap.add_argument("--out", type=Path, default=None, help="output directory (default docs/results)")
    ap.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    ap.add_argument("--setups", default=None, help="comma-separated subset of " + ", ".join(SETUPS))
    ap.add_argument("--max-train", type=int, default=None,
                    help="cap every set-up's training / validation / test sizes (a tiny smoke run)")
    ap.add_argument("--mnist", default=None, help="directory of MNIST's IDX files (adds demo_mnist)")
    ap.add_argument("--reuse", type=Path, default=None,
                    help="take the runs of a saved sdprop.json (same settings and data) instead of rerunning them")
    ap.add_argument("--from-json", type=Path, default=None,
                    help="rewrite the report and figure from a saved sdprop.json instead of training")
    args = ap.parse_args(argv)
    if args.from_json is not None:
        saved = json.loads(args.from_json.read_text())
        out_dir = args.out or args.from_json.parent
        cfg = saved["settings"]
        cfg["seeds"] = tuple(cfg["seeds"])
        for r in saved["runs"]:
            r["lr"] = float(r["lr"])
        write_report(saved, cfg, saved["setups"], out_dir / "sdprop.md", out_dir / "sdprop.png",
                     saved["wall_seconds"], bool(saved.get("quick")), saved.get("skipped", {}))
        print(f"rewrote {out_dir / 'sdprop.md'} from {args.from_json}")
        return 0
    cfg = json.loads(json.dumps(QUICK if args.quick else FULL))  # a deep copy
    wanted = list(cfg["setups"]) if args.setups is None else [s.strip() for s in args.setups.split(",") if s.strip()]
    bad = [s for s in wanted if s not in SETUPS]
    if bad:
        ap.error(f"unknown set-up(s) {bad}; choose from {list(SETUPS)}")
    if args.max_train is not None:
        if args.max_train < 10:
            ap.error("--max-train must be >= 10")
        for name in wanted:
            s = setup_cfg(cfg, name)
            cap = {k: min(s[k] or args.max_train, args.max_train) for k in ("n_train", "n_val", "n_test")}
            cfg["overrides"][name] = dict(cfg["overrides"].get(name, {}), **cap)
    setups, data, skipped = available(cfg, wanted, args.mnist)
    if not setups:
        print("no set-up has its data here: " + "; ".join(f"{k}: {v}" for k, v in skipped.items()))
        return 1
    for k, v in skipped.items():
        print(f"skipping {k}: {v}")
    global _DATA
    _DATA = data
    out_dir = args.out or (Path(tempfile.mkdtemp(prefix="sdprop_")) if args.quick else ROOT / "docs" / "results")
    t0 = time.perf_counter()
    out = experiment(cfg, setups, max(1, args.workers), _reusable(args.reuse, cfg, data))
    wall = time.perf_counter() - t0
    out["workers"] = max(1, args.workers)
    out["sizes"] = {n: dict(train=len(d["y"]), val=len(d["yval"]), test=len(d["yte"])) for n, d in data.items()}
    out_dir.mkdir(parents=True, exist_ok=True)
    with open(out_dir / "sdprop.json", "w") as f:
        json.dump({"settings": cfg, "setups": setups, "skipped": skipped, "wall_seconds": wall,
                   "quick": args.quick, "workers": out["workers"], "sizes": out["sizes"],
                   "chosen": out["chosen"], "reused": out["reused"], "runs": out["runs"]}, f, indent=1, default=_from_json)
    write_report(out, cfg, setups, out_dir / "sdprop.md", out_dir / "sdprop.png", wall, args.quick, skipped)
    print(f"wrote {out_dir / 'sdprop.md'}, sdprop.png, sdprop.json ({wall:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
