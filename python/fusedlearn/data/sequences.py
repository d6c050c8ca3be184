"""Sequence data: Mackey-Glass, the adding problem, the copy task and character-level text.

Every generator is seeded (``seed``: an int, ``None`` or a ``numpy.random.Generator``)
and returns time-major arrays ``[T, N, ...]`` as ``torch.nn.GRU`` / ``LSTM`` expect by
default (``batch_first=True`` gives ``[N, T, ...]``).

* :func:`mackey_glass` — the delay differential equation of docs/math/sequences.md, RK4;
* :func:`adding_problem` — sum the two marked numbers of a long sequence;
* :func:`copy_task` — reproduce a short symbol string after a long blank delay;
* :func:`char_text` / :func:`batchify` — a text file as integer codes, cut into
  ``[T, B]`` streams for truncated BPTT.
"""
from __future__ import annotations

import math
import os

import numpy as np

__all__ = ["mackey_glass", "adding_problem", "copy_task", "char_text", "batchify"]


def _rng(seed) -> np.random.Generator:
    if isinstance(seed, np.random.Generator):
        return seed
    return np.random.default_rng(seed)


def _count(value, name: str, who: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{who}: {name} must be an integer, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{who}: {name} must be >= {minimum}, got {value}")
    return int(value)


def _positive(value, name: str, who: str) -> float:
    v = float(value)
    if not v > 0 or not math.isfinite(v):
        raise ValueError(f"{who}: {name} must be a positive finite number, got {value}")
    return v


def mackey_glass(n: int, tau: float = 17.0, *, a: float = 0.2, b: float = 0.1, power: float = 10.0,
                 dt: float = 0.1, x0: float = 1.2, discard: int = 0, sample_step: float = 1.0,
                 dtype=np.float64) -> np.ndarray:
    """``n`` samples of the Mackey-Glass series (docs/math/sequences.md)::

        dx/dt = a x(t - tau) / (1 + x(t - tau)^power) - b x(t),   a = 0.2, b = 0.1, tau = 17

    integrated with classical RK4 at step ``dt = 0.1`` from ``x(0) = x0 = 1.2``
    with the history ``x(t < 0) = 0``.  The delayed value an RK4 stage needs at
    ``t + c dt - tau`` is read from the stored grid by linear interpolation (with
    ``tau / dt`` an integer, as for the defaults, the stage at ``c = 1/2`` takes
    the mean of two grid values and the others fall on the grid).

    The series is sampled every ``sample_step`` time units (a multiple of
    ``dt``) and returned for ``t = discard*sample_step, ..., (discard + n - 1)*sample_step``:
    ``discard`` drops the initial transient (it is 0 by default, so that
    ``x[0] = x0``; a few hundred is usual when the attractor is wanted).  For
    ``0 <= t < tau`` the delayed term is zero and ``x(t) = x0 exp(-b t)`` exactly,
    which the tests use.  No randomness is involved.
    """
    who = "mackey_glass"
    n = _count(n, "n", who)
    discard = _count(discard, "discard", who, minimum=0)
    tau, dt, sample_step = _positive(tau, "tau", who), _positive(dt, "dt", who), _positive(sample_step, "sample_step", who)
    if tau < dt:
        raise ValueError(f"{who}: tau ({tau}) must be at least dt ({dt})")
    per = sample_step / dt
    stride = int(round(per))
    if stride < 1 or abs(per - stride) > 1e-9 * max(1.0, per):
        raise ValueError(f"{who}: sample_step ({sample_step}) must be a whole multiple of dt ({dt})")
    a, b, power, x0 = float(a), float(b), float(power), float(x0)
    steps = (discard + n - 1) * stride
    hist = [0.0] * (steps + 1)  # x on the grid t_i = i dt
    hist[0] = x0
    lag = tau / dt
    lag_i = int(math.floor(lag))
    frac = lag - lag_i  # x(t_i + c dt - tau) = x at grid position i + c - lag

    def delayed(pos: float) -> float:
        """x at fractional grid position ``pos`` (linear interpolation), 0 before t = 0."""
        if pos < 0.0:
            return 0.0
        j = int(pos)
        w = pos - j
        if w == 0.0 or j + 1 > steps:
            return hist[j]
        return (1.0 - w) * hist[j] + w * hist[j + 1]

    def f(x: float, xd: float) -> float:
        return a * xd / (1.0 + xd ** power) - b * x

    x = x0
    for i in range(steps):
        base = i - lag_i - frac
        d0 = delayed(base)
        dh = delayed(base + 0.5)
        d1 = delayed(base + 1.0)
        k1 = f(x, d0)
        k2 = f(x + 0.5 * dt * k1, dh)
        k3 = f(x + 0.5 * dt * k2, dh)
        k4 = f(x + dt * k3, d1)
        x = x + dt / 6.0 * (k1 + 2.0 * k2 + 2.0 * k3 + k4)
        hist[i + 1] = x
    out = np.asarray(hist[discard * stride::stride], dtype=np.float64)[:n]
    return out.astype(dtype, copy=False)


def adding_problem(n: int, seq_len: int = 100, *, seed=None, batch_first: bool = False,
                   dtype=np.float32) -> tuple:
    """The adding problem (Hochreiter & Schmidhuber 1997, in the form of Le et al. 2015).

    Each of the ``n`` sequences has ``seq_len`` steps of two features: a value
    drawn from U[0, 1) and a marker that is 1 at exactly two steps, one drawn
    uniformly from the first half ``[0, seq_len // 2)`` and one from the second
    half ``[seq_len // 2, seq_len)``, and 0 elsewhere.  The target is the sum of
    the two marked values (a regression target read after the last step; always
    predicting 1 gives the baseline mean squared error 1/6).

    Returns ``x`` of shape ``[seq_len, n, 2]`` (``[n, seq_len, 2]`` with
    ``batch_first``) and ``y`` of shape ``[n]``.
    """
    who = "adding_problem"
    n = _count(n, "n", who)
    seq_len = _count(seq_len, "seq_len", who, minimum=2)
    rng = _rng(seed)
    half = seq_len // 2
    values = rng.random((n, seq_len))
    first = rng.integers(0, half, size=n)
    second = rng.integers(half, seq_len, size=n)
    marks = np.zeros((n, seq_len))
    rows = np.arange(n)
    marks[rows, first] = 1.0
    marks[rows, second] = 1.0
    y = values[rows, first] + values[rows, second]
    x = np.stack([values, marks], axis=-1)
    if not batch_first:
        x = x.transpose(1, 0, 2)
    return np.ascontiguousarray(x, dtype=dtype), y.astype(dtype)


def copy_task(n: int, seq_len: int = 10, delay: int = 50, *, n_symbols: int = 8, seed=None,
              batch_first: bool = False) -> tuple:
    """The copy-memory task (Hochreiter & Schmidhuber 1997; the form of Arjovsky et al. 2016).

    Tokens: ``0`` blank, ``1..n_symbols`` data symbols, ``n_symbols + 1`` the
    delimiter (``n_symbols + 2`` classes in all).  Each input sequence is
    ``seq_len`` random data symbols, ``delay - 1`` blanks, the delimiter and
    ``seq_len`` blanks (length ``delay + 2 seq_len``); the target is blank for
    the first ``delay + seq_len`` steps and then the ``seq_len`` data symbols.
    Predicting blanks and then uniformly random symbols scores the baseline
    cross-entropy ``seq_len log(n_symbols) / (delay + 2 seq_len)`` per step.

    Returns int64 ``x`` and ``y`` of shape ``[delay + 2 seq_len, n]`` (``[n, ...]``
    with ``batch_first``).
    """
    who = "copy_task"
    n = _count(n, "n", who)
    seq_len = _count(seq_len, "seq_len", who)
    delay = _count(delay, "delay", who)
    n_symbols = _count(n_symbols, "n_symbols", who)
    rng = _rng(seed)
    total = delay + 2 * seq_len
    data = rng.integers(1, n_symbols + 1, size=(n, seq_len))
    x = np.zeros((n, total), np.int64)
    y = np.zeros((n, total), np.int64)
    x[:, :seq_len] = data
    x[:, seq_len + delay - 1] = n_symbols + 1
    y[:, delay + seq_len:] = data
    if not batch_first:
        x, y = x.T, y.T
    return np.ascontiguousarray(x), np.ascontiguousarray(y)


def char_text(path, *, encoding: str = "utf-8", vocab=None, lower: bool = False,
              max_chars: int | None = None) -> tuple:
    """A text file as character codes: returns ``(codes, vocab)``.

    ``vocab`` is the sorted list of the distinct characters (or the one given,
    whose order then defines the codes; a character outside it raises
    ``ValueError``) and ``codes`` the int64 array of each character's index.
    ``lower`` lower-cases the text first; ``max_chars`` keeps its beginning.
    """
    if not isinstance(path, (str, bytes, os.PathLike)):
        raise TypeError(f"char_text: path must be a path, got {type(path).__name__}")
    with open(path, encoding=encoding) as fh:
        text = fh.read() if max_chars is None else fh.read(_count(max_chars, "max_chars", "char_text"))
    if lower:
        text = text.lower()
    if not text:
        raise ValueError(f"char_text: {os.fspath(path)!r} is empty")
    if vocab is None:
        vocab = sorted(set(text))
    else:
        vocab = list(vocab)
        if len(set(vocab)) != len(vocab):
            raise ValueError("char_text: vocab has repeated characters")
    lut = {ch: i for i, ch in enumerate(vocab)}
    unknown = set(text).difference(lut)
    if unknown:
        raise ValueError(f"char_text: characters not in vocab: {''.join(sorted(unknown))[:20]!r}")
    # Map through the code points: one vectorised lookup instead of a Python loop per character.
    points = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
    table = np.full(max(ord(c) for c in vocab) + 1, -1, np.int64)
    for ch, i in lut.items():
        table[ord(ch)] = i
    return table[points], vocab


def batchify(data, batch_size: int) -> np.ndarray:
    """Cut a 1-D stream into ``batch_size`` contiguous streams side by side: ``[T, B]``.

    Column ``b`` holds ``data[b*T : (b+1)*T]`` with ``T = len(data) // batch_size``
    (the remainder is dropped), so a truncated-BPTT loop over the rows keeps each
    column's text in order and can carry the hidden state from chunk to chunk.
    """
    d = np.asarray(data)
    if d.ndim != 1:
        raise ValueError(f"batchify: data must be 1-D, got shape {d.shape}")
    batch_size = _count(batch_size, "batch_size", "batchify")
    t = d.shape[0] // batch_size
    if t == 0:
        raise ValueError(f"batchify: {d.shape[0]} items cannot fill {batch_size} streams")
    return np.ascontiguousarray(d[: t * batch_size].reshape(batch_size, t).T)
