#!/usr/bin/env python3
"""Fused optimizer steps: fusedlearn against torch.optim and numpy.

For every rule, on (a) one float32 tensor of N parameters and (b) 200 tensors
totalling N (N = 16M, or 4M with --quick), at each thread count, times one
optimizer step of:

  ours-np     fusedlearn.functional.<rule>_ on numpy arrays
  ours-t      fusedlearn.functional.<rule>_ on torch tensors (allocated by torch)
  ours-opt    fusedlearn.optim.<Class>(torch params).step(): what a torch.optim user switches to
  t-fused     torch.optim.<Rule>(fused=True)      where torch has a CPU fused kernel
  t-foreach   torch.optim.<Rule>(foreach=True)    multi-tensor (_foreach_*) path
  t-single    torch.optim.<Rule>(foreach=False)   per-tensor path (torch's CPU default)
  numpy       the same rule written with in-place numpy ufuncs (out=, no temporaries
              beyond two preallocated scratch arrays), in a subprocess

Only the step is timed: gradients are set beforehand (torch: ``p.grad``) and
stay fixed.  Each implementation is warmed up, then timed in interleaved rounds
(one untimed step whenever the implementation changes); the figure is the median
step.  Effective GB/s = bytes_per_param * N / median time, where bytes_per_param
counts each stream the rule must read and write once (Adam: p, g, m, v read and
p, m, v written = 28 B).

    PYTHONPATH=python python3 bench/bench_optim.py [--rules adam,sdprop] [--threads 1,2]
                                                   [--quick] [--json out.json]
"""
from __future__ import annotations

import argparse
import functools
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time

import numpy as np

# ---- the rules -------------------------------------------------------------------

RULES = ["sgd", "adagrad", "adadelta", "rmsprop", "adam", "adamw", "adamax", "sdprop", "accsgd",
         "nadam", "radam", "rprop", "asgd"]

# Hyperparameters, in torch.optim's names, shared by every implementation.
HP = {
    "sgd": dict(lr=0.01, momentum=0.9),
    "adagrad": dict(lr=0.01, eps=1e-10),
    "adadelta": dict(lr=1.0, rho=0.9, eps=1e-6),
    "rmsprop": dict(lr=0.01, alpha=0.99, eps=1e-8),
    "adam": dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-8),
    "adamw": dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2),
    "adamax": dict(lr=2e-3, betas=(0.9, 0.999), eps=1e-8),
    "sdprop": dict(lr=1e-3, gamma=0.99, eps=1e-8),
    "accsgd": dict(lr=1e-3, kappa=1000.0, xi=10.0, small_const=0.7),
    "nadam": dict(lr=2e-3, betas=(0.9, 0.999), eps=1e-8, momentum_decay=4e-3),
    "radam": dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-8),
    "rprop": dict(lr=1e-2, etas=(0.5, 1.2), step_sizes=(1e-6, 50.0)),
    "asgd": dict(lr=1e-2, lambd=1e-4, alpha=0.75, t0=1e6),
}
# Initial value of each state stream (0 unless listed): Rprop's step sizes start at lr.
STATE_INIT = {"rprop": [0.0, 1e-2]}
# State streams per parameter (each read and written once per step).
NSTATE = {"sgd": 1, "adagrad": 1, "adadelta": 2, "rmsprop": 1, "adam": 2, "adamw": 2, "adamax": 2,
          "sdprop": 2, "accsgd": 1, "nadam": 2, "radam": 2, "rprop": 2, "asgd": 1}
FL_CLASS = {"sgd": "SGD", "adagrad": "Adagrad", "adadelta": "Adadelta", "rmsprop": "RMSprop", "adam": "Adam",
            "adamw": "AdamW", "adamax": "Adamax", "sdprop": "SDProp", "accsgd": "AccSGD",
            "nadam": "NAdam", "radam": "RAdam", "rprop": "Rprop", "asgd": "ASGD"}
# torch.optim peers.  AccSGD has none (torch's ASGD is averaged SGD, another
# algorithm), nor has SDProp.
TORCH_CLASS = {"sgd": "SGD", "adagrad": "Adagrad", "adadelta": "Adadelta", "rmsprop": "RMSprop",
               "adam": "Adam", "adamw": "AdamW", "adamax": "Adamax", "nadam": "NAdam", "radam": "RAdam",
               "rprop": "Rprop", "asgd": "ASGD"}


@functools.lru_cache(maxsize=None)
def _step_scalars(rule: str, step: int) -> tuple:
    return tuple(sorted(_compute_step_scalars(rule, step).items()))


def step_scalars(rule: str, step: int) -> dict:
    return dict(_step_scalars(rule, step))


def _compute_step_scalars(rule: str, step: int) -> dict:
    """Per-step scalars the kernels take (torch keeps them as per-param 0-d tensors), for a
    constant lr: NAdam's momentum product, ASGD's eta and mu."""
    h = HP[rule]
    if rule == "nadam":
        prod = 1.0
        for t in range(1, step + 1):
            prod = float(np.float32(prod) * np.float32(h["betas"][0] * (1 - 0.5 * 0.96 ** (t * h["momentum_decay"]))))
        return {"mu_product": prod}
    if rule == "asgd":
        t = step - 1  # the values stored after the previous step
        eta = h["lr"] / (1 + h["lambd"] * h["lr"] * t) ** h["alpha"] if t else h["lr"]
        return {"eta": float(np.float32(eta)), "mu": float(np.float32(1 / max(1, t - h["t0"]))) if t else 1.0}
    return {}


def init_states(rule: str, make) -> list:
    """NSTATE[rule] state lists, make(value) building one list."""
    init = STATE_INIT.get(rule, [0.0] * NSTATE[rule])
    return [make(v) for v in init]


def bytes_per_param(rule: str) -> int:
    # p and the states are read and written, g only read: 4 B each way.
    return 4 * (2 + NSTATE[rule]) + 4 * (1 + NSTATE[rule])


def split_sizes(total: int, count: int) -> list[int]:
    """The 200-tensor layout, the same formula as bench/optim_bench.cpp."""
    w = [1 + (i * 37) % 101 for i in range(count)]
    ws = sum(w)
    sizes = [total * x // ws for x in w[:-1]]
    sizes.append(total - sum(sizes))
    return sizes


def case_sizes(case: str, n: int) -> list[int]:
    return [n] if case == "one" else split_sizes(n, 200)


CASE_LABEL = {"one": "1 tensor", "many": "200 tensors"}

# ---- numpy reference implementations -----------------------------------------------


def np_step(rule: str, p, g, s, step: int, t1, t2) -> None:
    """One step of `rule` on one array, in place, with ufuncs writing into p, the
    states s, or the scratch arrays t1, t2 (same shape as p)."""
    h = HP[rule]
    if rule == "sgd":
        (buf,) = s
        if step == 1:
            np.copyto(buf, g)
        else:
            np.multiply(buf, h["momentum"], out=buf)
            np.add(buf, g, out=buf)
        np.multiply(buf, h["lr"], out=t1)
        np.subtract(p, t1, out=p)
    elif rule == "adagrad":
        (acc,) = s
        np.multiply(g, g, out=t1)
        np.add(acc, t1, out=acc)
        np.sqrt(acc, out=t1)
        np.add(t1, h["eps"], out=t1)
        np.divide(g, t1, out=t1)
        np.multiply(t1, h["lr"], out=t1)
        np.subtract(p, t1, out=p)
    elif rule == "adadelta":
        sq, acc = s
        rho, eps = h["rho"], h["eps"]
        np.multiply(sq, rho, out=sq)
        np.multiply(g, g, out=t1)
        np.multiply(t1, 1.0 - rho, out=t1)
        np.add(sq, t1, out=sq)
        np.add(acc, eps, out=t1)
        np.sqrt(t1, out=t1)
        np.add(sq, eps, out=t2)
        np.sqrt(t2, out=t2)
        np.divide(t1, t2, out=t1)
        np.multiply(t1, g, out=t1)  # delta
        np.multiply(acc, rho, out=acc)
        np.multiply(t1, t1, out=t2)
        np.multiply(t2, 1.0 - rho, out=t2)
        np.add(acc, t2, out=acc)
        np.multiply(t1, h["lr"], out=t1)
        np.subtract(p, t1, out=p)
    elif rule == "rmsprop":
        (sq,) = s
        a = h["alpha"]
        np.multiply(sq, a, out=sq)
        np.multiply(g, g, out=t1)
        np.multiply(t1, 1.0 - a, out=t1)
        np.add(sq, t1, out=sq)
        np.sqrt(sq, out=t1)
        np.add(t1, h["eps"], out=t1)
        np.divide(g, t1, out=t1)
        np.multiply(t1, h["lr"], out=t1)
        np.subtract(p, t1, out=p)
    elif rule in ("adam", "adamw"):
        m, v = s
        b1, b2 = h["betas"]
        lr = h["lr"]
        if rule == "adamw":
            np.multiply(p, 1.0 - lr * h["weight_decay"], out=p)
        np.subtract(g, m, out=t1)
        np.multiply(t1, 1.0 - b1, out=t1)
        np.add(m, t1, out=m)
        np.multiply(v, b2, out=v)
        np.multiply(g, g, out=t1)
        np.multiply(t1, 1.0 - b2, out=t1)
        np.add(v, t1, out=v)
        np.sqrt(v, out=t1)
        np.multiply(t1, 1.0 / math.sqrt(1.0 - b2 ** step), out=t1)
        np.add(t1, h["eps"], out=t1)
        np.divide(m, t1, out=t1)
        np.multiply(t1, lr / (1.0 - b1 ** step), out=t1)
        np.subtract(p, t1, out=p)
    elif rule == "adamax":
        m, u = s
        b1, b2 = h["betas"]
        np.subtract(g, m, out=t1)
        np.multiply(t1, 1.0 - b1, out=t1)
        np.add(m, t1, out=m)
        np.multiply(u, b2, out=u)
        np.abs(g, out=t1)
        np.add(t1, h["eps"], out=t1)
        np.maximum(u, t1, out=u)
        np.divide(m, u, out=t1)
        np.multiply(t1, h["lr"] / (1.0 - b1 ** step), out=t1)
        np.subtract(p, t1, out=p)
    elif rule == "sdprop":
        mean, var = s
        gm = h["gamma"]
        np.subtract(g, mean, out=t1)  # diff, against the old mean
        np.multiply(t1, 1.0 - gm, out=t2)
        np.add(mean, t2, out=mean)
        np.multiply(t1, t1, out=t1)
        np.multiply(t1, 1.0 - gm, out=t1)
        np.add(var, t1, out=var)
        np.multiply(var, gm, out=var)
        np.sqrt(var, out=t1)
        np.add(t1, h["eps"], out=t1)
        np.divide(g, t1, out=t1)
        np.multiply(t1, h["lr"] * math.sqrt(1.0 - gm ** step), out=t1)
        np.subtract(p, t1, out=p)
    elif rule in ("nadam", "radam"):
        m, v = s
        b1, b2 = h["betas"]
        np.subtract(g, m, out=t1)
        np.multiply(t1, 1.0 - b1, out=t1)
        np.add(m, t1, out=m)
        np.multiply(v, b2, out=v)
        np.multiply(g, g, out=t1)
        np.multiply(t1, 1.0 - b2, out=t1)
        np.add(v, t1, out=v)
        if rule == "nadam":
            md, prod = h["momentum_decay"], step_scalars(rule, step)["mu_product"]
            mu = b1 * (1 - 0.5 * 0.96 ** (step * md))
            mu_next = b1 * (1 - 0.5 * 0.96 ** ((step + 1) * md))
            np.divide(v, 1.0 - b2 ** step, out=t1)
            np.sqrt(t1, out=t1)
            np.add(t1, h["eps"], out=t1)
            np.divide(g, t1, out=t2)
            np.multiply(t2, h["lr"] * (1 - mu) / (1 - prod), out=t2)
            np.subtract(p, t2, out=p)
            np.divide(m, t1, out=t2)
            np.multiply(t2, h["lr"] * mu_next / (1 - prod * mu_next), out=t2)
            np.subtract(p, t2, out=p)
        else:
            bc1, bc2 = 1.0 - b1 ** step, 1.0 - b2 ** step
            rho_inf = 2 / (1 - b2) - 1
            rho_t = rho_inf - 2 * step * b2 ** step / bc2
            if rho_t > 5:
                rect = math.sqrt((rho_t - 4) * (rho_t - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho_t))
                np.sqrt(v, out=t1)
                np.add(t1, h["eps"], out=t1)
                np.divide(m, t1, out=t1)
                np.multiply(t1, h["lr"] * rect * math.sqrt(bc2) / bc1, out=t1)
            else:
                np.multiply(m, h["lr"] / bc1, out=t1)
            np.subtract(p, t1, out=p)
    elif rule == "rprop":
        prev, ss = s
        (em, ep), (smin, smax) = h["etas"], h["step_sizes"]
        np.multiply(g, prev, out=t1)
        np.copyto(t2, 1.0)
        t2[t1 > 0] = ep
        t2[t1 < 0] = em
        np.multiply(ss, t2, out=ss)
        np.clip(ss, smin, smax, out=ss)
        np.copyto(prev, g)
        prev[t1 < 0] = 0
        np.sign(prev, out=t2)
        np.multiply(t2, ss, out=t2)
        np.subtract(p, t2, out=p)
    elif rule == "asgd":
        (ax,) = s
        sc = step_scalars(rule, step)
        np.multiply(p, 1 - h["lambd"] * sc["eta"], out=p)
        np.multiply(g, sc["eta"], out=t1)
        np.subtract(p, t1, out=p)
        if sc["mu"] == 1:
            np.copyto(ax, p)
        else:
            np.subtract(p, ax, out=t1)
            np.multiply(t1, sc["mu"], out=t1)
            np.add(ax, t1, out=ax)
    elif rule == "accsgd":
        (b,) = s
        e, xi, kappa = h["small_const"], h["xi"], h["kappa"]
        eta = h["lr"] * e * (1.0 + xi) / (1.0 + e)
        nu = (e * xi - 1.0) / (e * (1.0 + xi))
        mu = (kappa - e * e * xi) / (kappa + e * xi)
        np.multiply(b, mu, out=b)
        np.multiply(g, 1.0 - mu, out=t1)
        np.add(b, t1, out=b)
        np.multiply(g, eta * (1.0 - nu), out=t1)
        np.multiply(b, eta * nu, out=t2)
        np.add(t1, t2, out=t1)
        np.subtract(p, t1, out=p)
    else:
        raise ValueError(rule)


class NumpyRef:
    """The numpy implementation over a list of arrays, with shared scratch space."""

    def __init__(self, rule, params, grads, states):
        self.rule, self.p, self.g, self.s = rule, params, grads, states
        big = max(x.size for x in params)
        self.t1 = np.empty(big, np.float32)
        self.t2 = np.empty(big, np.float32)
        self.t1.fill(0)
        self.t2.fill(0)
        self.step = 0

    def __call__(self):
        self.step += 1
        for i, (p, g) in enumerate(zip(self.p, self.g)):
            n = p.size
            np_step(self.rule, p, g, [s[i] for s in self.s], self.step, self.t1[:n], self.t2[:n])


def make_numpy_data(sizes, seed=0):
    rng = np.random.default_rng(seed)
    params = [rng.standard_normal(n, dtype=np.float32) * np.float32(0.1) for n in sizes]
    grads = [rng.standard_normal(n, dtype=np.float32) * np.float32(1e-3) for n in sizes]
    return params, grads


def zeros_touched(n):
    z = np.empty(n, np.float32)
    z.fill(0)  # np.zeros would leave the pages unmapped until the first step
    return z


# ---- timing --------------------------------------------------------------------------


def measure(methods: dict, warmup: int, rounds: int, per_round: int, slow_s: float = 1.0) -> dict:
    """Median seconds per call of each callable; implementations interleave by round.

    An implementation whose warm-up step takes over `slow_s` seconds (torch's
    multi-threaded paths on an oversubscribed machine can take that long) is
    timed once per round instead of `per_round` times, to bound the run time."""
    times = {k: [] for k in methods}
    reps = {}
    for name, fn in methods.items():
        last = 0.0
        for _ in range(warmup):
            t0 = time.perf_counter()
            fn()
            last = time.perf_counter() - t0
        reps[name] = per_round if last <= slow_s else 1
    for _ in range(rounds):
        for name, fn in methods.items():
            fn()  # untimed: lets the previous implementation's threads go quiet
            for _ in range(reps[name]):
                t0 = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


# ---- numpy worker (subprocess) -----------------------------------------------------


def numpy_worker(cfg: dict) -> dict:
    out = {}
    for rule in cfg["rules"]:
        for case in cfg["cases"]:
            sizes = case_sizes(case, cfg["n"])
            p, g = make_numpy_data(sizes)
            states = [[zeros_touched(n) for n in sizes] for _ in range(NSTATE[rule])]
            ref = NumpyRef(rule, p, g, states)
            out[f"{rule}/{case}"] = measure({"numpy": ref}, cfg["warmup"], cfg["rounds"], cfg["per_round"])["numpy"]
            del p, g, states, ref
    return out


def run_numpy_subprocess(cfg: dict) -> dict:
    env = dict(os.environ)
    for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE"):
        env.pop(k, None)
    r = subprocess.run([sys.executable, os.path.abspath(__file__), "--_numpy-worker", json.dumps(cfg)],
                       env=env, capture_output=True, text=True)
    if r.returncode != 0:
        sys.stderr.write(r.stderr)
        raise RuntimeError("numpy worker failed")
    return json.loads(r.stdout.strip().splitlines()[-1])


# ---- ours and torch ------------------------------------------------------------------


def ours_kwargs(rule: str) -> dict:
    h = dict(HP[rule])
    if "betas" in h:
        h["beta1"], h["beta2"] = h.pop("betas")
    if rule == "rprop":
        h.pop("lr")  # only the initial step sizes
        (h["etaminus"], h["etaplus"]), (h["step_size_min"], h["step_size_max"]) = h.pop("etas"), h.pop("step_sizes")
    if rule == "asgd":
        h = dict(lambd=h["lambd"])  # lr, alpha, t0 enter through eta and mu
    return h


class Ours:
    """fusedlearn.functional.<rule>_ over lists of arrays (numpy or torch)."""

    def __init__(self, F, rule, params, grads, states):
        self.fn = getattr(F, rule + "_")
        self.rule = rule
        self.kw = ours_kwargs(rule)
        self.p, self.g, self.s = params, grads, states
        self.step = 0

    def __call__(self):
        self.step += 1
        self.fn(self.p, self.g, *self.s, step=self.step, **self.kw, **step_scalars(self.rule, self.step))


def torch_variants(torch, rule):
    """(name, constructor kwargs) of the torch.optim paths to try."""
    return [("t-fused", dict(fused=True)), ("t-foreach", dict(foreach=True)), ("t-single", dict(foreach=False))]


def make_torch_opt(torch, rule, params, variant_kw):
    cls = getattr(torch.optim, TORCH_CLASS[rule])
    return cls(params, **HP[rule], **variant_kw)


def torch_params(torch, p_np, g_np):
    ps = []
    for p0, g0 in zip(p_np, g_np):
        p = torch.empty(p0.shape, dtype=torch.float32)
        p.copy_(torch.from_numpy(p0))
        p.requires_grad_(True)
        g = torch.empty(g0.shape, dtype=torch.float32)
        g.copy_(torch.from_numpy(g0))
        p.grad = g
        ps.append(p)
    return ps


def check_rules(torch, F, rules) -> list[str]:
    """3 steps on 1000 (+ 37) elements: ours, numpy reference and torch.optim agree."""
    problems = []
    sizes = [1000, 37]
    for rule in rules:
        p0, g0 = make_numpy_data(sizes, seed=1)
        # numpy reference
        p_ref = [x.copy() for x in p0]
        ref = NumpyRef(rule, p_ref, g0, init_states(rule, lambda v: [np.full(n, v, np.float32) for n in sizes]))
        # ours
        p_ours = [x.copy() for x in p0]
        ours = Ours(F, rule, p_ours, g0, init_states(rule, lambda v: [np.full(n, v, np.float32) for n in sizes]))
        for _ in range(3):
            ref()
            ours()
        for a, b in zip(p_ours, p_ref):
            if not np.allclose(a, b, rtol=1e-4, atol=1e-6):
                problems.append(f"{rule}: ours vs numpy reference differ (max {np.abs(a - b).max():.3g})")
                break
        if rule in TORCH_CLASS:
            tp = torch_params(torch, p0, g0)
            opt = make_torch_opt(torch, rule, tp, dict(foreach=False))
            for _ in range(3):
                opt.step()
            for a, b in zip(p_ours, tp):
                b = b.detach().numpy()
                if not np.allclose(a, b, rtol=1e-4, atol=1e-6):
                    problems.append(f"{rule}: ours vs torch.optim differ (max {np.abs(a - b).max():.3g})")
                    break
    return problems


def bench_rule_case(torch, F, fl, rule, case, n, threads, timing, log) -> dict:
    sizes = case_sizes(case, n)
    p0, g0 = make_numpy_data(sizes)
    methods = {}
    skipped = {}

    # ours on numpy arrays (numpy's allocator)
    methods["ours-np"] = Ours(F, rule, [x.copy() for x in p0], [x.copy() for x in g0],
                              init_states(rule, lambda v: [zeros_touched(k) + np.float32(v) for k in sizes]))
    # ours on torch tensors (torch's allocator, as torch.optim's params and state)
    tp = torch_params(torch, p0, g0)
    with torch.no_grad():
        methods["ours-t"] = Ours(F, rule, [p.detach() for p in tp], [p.grad for p in tp],
                                 init_states(rule, lambda v: [torch.full_like(p, v) for p in tp]))
    # ours through the fl.optim class on torch params: the same API and the
    # same Python-side work per step as torch.optim
    ps = torch_params(torch, p0, g0)
    methods["ours-opt"] = getattr(fl.optim, FL_CLASS[rule])(ps, **HP[rule]).step
    if rule in TORCH_CLASS:
        for name, kw in torch_variants(torch, rule):
            ps = torch_params(torch, p0, g0)
            try:
                opt = make_torch_opt(torch, rule, ps, kw)
                opt.step()  # also where an unsupported fused path raises
            except (RuntimeError, TypeError, ValueError, NotImplementedError) as e:
                skipped[name] = f"{type(e).__name__}: {str(e).splitlines()[0][:90]}"
                continue
            methods[name] = opt.step
    del p0, g0

    results = []
    for nt in threads:
        torch.set_num_threads(nt)
        fl.set_num_threads(nt)
        med = measure(methods, **timing)
        results.append((nt, med))
        log(f"  {rule:<9} {CASE_LABEL[case]:<12} nt={nt}: " +
            "  ".join(f"{k} {1e3 * v:.1f} ms" for k, v in med.items()))
    for k, why in skipped.items():
        log(f"  {rule:<9} {CASE_LABEL[case]:<12} {k} skipped ({why})")
    return {"results": results, "skipped": skipped}


# ---- main ----------------------------------------------------------------------------

COLS = ["ours-np", "ours-t", "ours-opt", "t-fused", "t-foreach", "t-single", "numpy"]


def fmt(x, w=7, nd=2):
    return f"{x:{w}.{nd}f}" if x is not None else " " * (w - 1) + "-"


# ---- Adafactor (not element-wise: its own bench) ------------------------------------
#
# One float32 matrix [4096, N/4096] (factored: row_var [4096, 1], col_var [1, N/4096]).
# Bytes per param counted as for the other rules, each stream the rule must read or
# write once: p, g read, p written = 12 B (the factors are O(rows + cols)).  Our kernel
# moves 24 B/param (three passes: p+g, g, p+g+p); torch's single-tensor step moves
# roughly three times that (it materialises the variance estimate and the update).
ADAFACTOR_BPP = 12


def bench_adafactor(torch, fl, n, threads, timing, log) -> list:
    rows_, cols_ = 4096, max(1, n // 4096)
    gen = torch.Generator().manual_seed(0)
    p0 = torch.randn(rows_, cols_, generator=gen)
    g0 = torch.randn(rows_, cols_, generator=gen)

    def param():
        p = torch.nn.Parameter(p0.clone())
        p.grad = g0.clone()
        return p

    out = []
    for nt in threads:
        fl.set_num_threads(nt)
        torch.set_num_threads(nt)
        methods = {}
        opt = fl.optim.Adafactor([param()])
        methods["ours-opt"] = opt.step
        for label, fe in (("t-foreach", True), ("t-single", False)):
            methods[label] = torch.optim.Adafactor([param()], foreach=fe).step
        med = measure(methods, **timing)
        gbs = {k: ADAFACTOR_BPP * rows_ * cols_ / v / 1e9 for k, v in med.items()}
        best = max(gbs["t-foreach"], gbs["t-single"])
        log(f"adafactor [{rows_}x{cols_}] thr={nt}: " + "  ".join(f"{k} {v * 1e3:.1f} ms" for k, v in med.items()))
        out.append(dict(rule="adafactor", case=f"{rows_}x{cols_}", threads=nt, bytes_per_param=ADAFACTOR_BPP,
                        median_s=med, gbs=gbs, opt_over_torch_fastest=gbs["ours-opt"] / best))
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rules", default=",".join(RULES + ["adafactor"]),
                    help="comma-separated subset of " + ",".join(RULES + ["adafactor"]))
    ap.add_argument("--threads", default="1,2", help="thread counts, e.g. 1,2")
    ap.add_argument("--cases", default="one,many", help="one (1 tensor), many (200 tensors), or both")
    ap.add_argument("--quick", action="store_true", help="4M parameters and fewer repeats")
    ap.add_argument("--n", type=int, default=None, help="total parameters (default 16M; 4M with --quick)")
    ap.add_argument("--json", default=None, help="write all figures to this file")
    ap.add_argument("--no-check", action="store_true", help="skip the agreement check of the implementations")
    ap.add_argument("--_numpy-worker", dest="numpy_worker", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.numpy_worker is not None:
        print(json.dumps(numpy_worker(json.loads(args.numpy_worker))))
        return 0

    rules = [r.strip() for r in args.rules.split(",") if r.strip()]
    with_adafactor = "adafactor" in rules
    rules = [r for r in rules if r != "adafactor"]
    for r in rules:
        if r not in RULES:
            ap.error(f"unknown rule {r!r} (known: {', '.join(RULES)})")
    threads = [int(t) for t in args.threads.split(",") if t.strip()]
    cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    for c in cases:
        if c not in CASE_LABEL:
            ap.error(f"unknown case {c!r} (one, many)")
    n = args.n or ((1 << 22) if args.quick else (1 << 24))
    # full: 3 warm-up steps, then 3 rounds of 5 timed steps = median of 15
    timing = dict(warmup=2, rounds=2, per_round=3) if args.quick else dict(warmup=3, rounds=3, per_round=5)

    def log(msg):
        print(msg, file=sys.stderr, flush=True)

    # numpy first, alone, in a clean subprocess (its element-wise ops are single-threaded,
    # so one figure serves every thread count)
    log(f"numpy reference (subprocess), N={n} ...")
    np_times = run_numpy_subprocess(dict(rules=rules, cases=cases, n=n, **timing)) if rules else {}

    import torch
    import fusedlearn as fl
    from fusedlearn import functional as F

    meta = {
        "n": n, "rules": rules, "threads": threads, "cases": cases, "timing": timing,
        "torch": torch.__version__, "numpy": np.__version__, "python": platform.python_version(),
        "fusedlearn": fl.build_info(), "cpu": platform.processor() or platform.machine(),
        "numpy_madvise_hugepage": bool(np._core.multiarray._get_madvise_hugepage())
        if hasattr(np, "_core") else None,
    }
    if not args.no_check:
        problems = check_rules(torch, F, rules)
        meta["check"] = problems or "ok"
        log("agreement check (ours / numpy reference / torch.optim, 3 steps): " +
            ("ok" if not problems else "; ".join(problems)))

    log(f"fusedlearn isa={fl.get_isa()}  torch {torch.__version__}  numpy {np.__version__}")
    rows = []
    for rule in rules:
        bpp = bytes_per_param(rule)
        for case in cases:
            r = bench_rule_case(torch, F, fl, rule, case, n, threads, timing, log)
            for nt, med in r["results"]:
                med = dict(med)
                med["numpy"] = np_times[f"{rule}/{case}"]
                gbs = {k: (bpp * n / med[k] / 1e9 if med.get(k) else None) for k in COLS}
                torch_best = max((gbs[k] for k in ("t-fused", "t-foreach", "t-single") if gbs[k]), default=None)
                rows.append(dict(
                    rule=rule, case=case, threads=nt, bytes_per_param=bpp, n=n,
                    median_s={k: med.get(k) for k in COLS}, gbs=gbs,
                    ours_over_torch_fastest=(gbs["ours-t"] / torch_best) if torch_best else None,
                    ours_over_torch_foreach=(gbs["ours-t"] / gbs["t-foreach"]) if gbs["t-foreach"] else None,
                    opt_over_torch_fastest=(gbs["ours-opt"] / torch_best) if torch_best else None,
                    ours_over_numpy=gbs["ours-np"] / gbs["numpy"],
                    skipped=r["skipped"],
                ))

    ada_rows = bench_adafactor(torch, fl, n, threads, timing, log) if with_adafactor else []

    # ---- table
    print()
    print(f"N = {n:,} float32 parameters per step; GB/s = bytes_per_param * N / median step time; "
          f"isa {fl.get_isa()}, torch {torch.__version__}, numpy {np.__version__}")
    hdr = (f"{'rule':<9} {'case':<11} {'thr':>3} {'B/p':>3} " + " ".join(f"{c:>9}" for c in COLS) +
           f" {'ours/fastest':>12} {'ours/foreach':>12} {'opt/fastest':>11}")
    print(hdr)
    print("-" * len(hdr))
    for row in rows:
        print(f"{row['rule']:<9} {CASE_LABEL[row['case']]:<11} {row['threads']:>3} {row['bytes_per_param']:>3} " +
              " ".join(fmt(row["gbs"][c], 9) for c in COLS) +
              f" {fmt(row['ours_over_torch_fastest'], 12)} {fmt(row['ours_over_torch_foreach'], 12)}"
              f" {fmt(row['opt_over_torch_fastest'], 11)}")
    print()
    print("columns are effective GB/s (higher is better); '-' = no such path (no torch peer, or torch")
    print("has no fused CPU kernel for the rule).  ours/fastest = ours-t over the fastest torch.optim")
    print("path, ours/foreach = ours-t over torch's foreach path, opt/fastest = ours-opt (fl.optim class")
    print("stepping torch params, Python overhead included) over the fastest torch.optim path.")
    print("numpy is single-threaded: the same")
    print("figure is shown for every thread count.")
    if ada_rows:
        print()
        print(f"Adafactor, one float32 matrix, GB/s at {ADAFACTOR_BPP} B/param (p, g read, p written):")
        print(f"{'case':<11} {'thr':>3} {'ours-opt':>9} {'t-foreach':>9} {'t-single':>9} {'opt/fastest':>11}")
        for row in ada_rows:
            print(f"{row['case']:<11} {row['threads']:>3} {fmt(row['gbs']['ours-opt'], 9)} "
                  f"{fmt(row['gbs']['t-foreach'], 9)} {fmt(row['gbs']['t-single'], 9)} "
                  f"{fmt(row['opt_over_torch_fastest'], 11)}")
        rows += ada_rows

    if args.json:
        with open(args.json, "w") as f:
            json.dump({"meta": meta, "rows": rows}, f, indent=1)
        log(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
