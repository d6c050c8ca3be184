"""Back-propagation through time: full BPTT over batches of sequences, and truncated
BPTT(k1, k2) over long streams with the hidden state carried from chunk to chunk.

The model is anything with the interface of :class:`fusedlearn.nn.SequenceModel`:
``model(x, state) -> (output, final_state)`` and ``model.backward(grad_output)``
(which runs BPTT through the recurrent layer's own backward).  ``loss_fn(pred, y)``
(or ``loss_fn(pred, y, mask)``) returns ``(loss, grad)`` with the loss a mean over
its elements, e.g. :class:`fusedlearn.nn.SequenceCrossEntropyLoss`.

Each update: ``optimizer.zero_grad()``, forward, loss, backward, gradient norm
(clipped with :func:`fusedlearn.optim.clip_grad_norm_` when ``clip_norm`` is set),
``optimizer.step()``, then ``constraint.step()`` (e.g.
:class:`fusedlearn.optim.GRUSpectralConstraint`).  A non-finite loss or gradient
norm, or a loss above ``diverge_above``, counts as a divergence: the step is not
taken and (with ``stop_on_divergence``) training stops; the history records it.
"""
from __future__ import annotations

import math
import time

import numpy as np

from ..nn.sequence import copy_state
from ..optim.grad_clip import _total_norm, clip_grad_norm_, collect_grads
from .loop import _Progress

__all__ = ["bptt_step", "fit_sequences", "train_tbptt"]


def _tslice(a, lo: int, hi: int, time_axis: int):
    return a[lo:hi] if time_axis == 0 else a[:, lo:hi]


def _time_axis(model) -> int:
    return 1 if getattr(model, "batch_first", False) else 0


def _diverged(loss: float, norm: float, diverge_above) -> bool:
    if not (math.isfinite(loss) and math.isfinite(norm)):
        return True
    return diverge_above is not None and loss > diverge_above


def _finish_update(model, optimizer, clip_norm, constraint, loss: float, diverge_above) -> tuple:
    """Gradient norm (pre-clip) and clipping, then the step and the constraint unless diverged.

    Returns ``(grad_norm, diverged)``."""
    params = list(model.parameters())
    if clip_norm is None:
        norm = _total_norm(collect_grads(params), 2.0)
    else:
        norm = clip_grad_norm_(params, clip_norm)
    if _diverged(loss, norm, diverge_above):
        return norm, True
    optimizer.step()
    if constraint is not None:
        constraint.step()
    return norm, False


def _check_common(clip_norm) -> None:
    if clip_norm is not None and not float(clip_norm) > 0:
        raise ValueError(f"clip_norm must be > 0 or None, got {clip_norm}")


def _loss(loss_fn, pred, y, mask):
    return loss_fn(pred, y) if mask is None else loss_fn(pred, y, mask)


def bptt_step(model, loss_fn, optimizer, x, y, *, state=None, mask=None, clip_norm=None, constraint=None,
              diverge_above=None) -> dict:
    """One full-BPTT update on a batch of sequences ``x`` (targets ``y``, optional ``mask``)
    from the initial ``state`` (``None``: zeros).

    Returns ``{'loss', 'grad_norm' (before clipping), 'state' (final, a copy), 'diverged'}``.
    """
    _check_common(clip_norm)
    optimizer.zero_grad()
    out, final = model(x, state)
    value, grad = _loss(loss_fn, out, y, mask)
    loss = float(value)
    model.backward(grad)
    norm, bad = _finish_update(model, optimizer, clip_norm, constraint, loss, diverge_above)
    return {"loss": loss, "grad_norm": norm, "state": final, "diverged": bad}


def _new_history() -> dict:
    return {"loss": [], "grad_norm": [], "epoch_loss": [], "updates": 0, "time": 0.0, "diverged": False,
            "diverged_at": None}


def fit_sequences(model, loss_fn, optimizer, batches, *, steps=None, clip_norm=None, constraint=None,
                  progress: bool = True, on_update=None, stop_on_divergence: bool = True,
                  diverge_above=None) -> dict:
    """Full BPTT over independent sequences: one update per batch from ``batches``
    (an iterable of ``(x, y)`` or ``(x, y, mask)``, e.g. a generator of fresh copy-task
    batches), each from a zero initial state; at most ``steps`` updates.

    Returns the history: per-update ``loss`` and ``grad_norm`` lists, ``epoch_loss``
    (one entry: the mean over the updates), ``updates``, ``time`` (seconds),
    ``diverged`` and ``diverged_at`` (the update index).
    """
    if steps is not None and int(steps) < 0:
        raise ValueError(f"fit_sequences: steps must be >= 0, got {steps}")
    hist = _new_history()
    total = None if steps is None else int(steps)
    bar = _Progress(progress, total, 1, 1)
    t0 = time.perf_counter()
    try:
        for i, batch in enumerate(batches):
            if total is not None and i >= total:
                break
            if not isinstance(batch, (tuple, list)) or len(batch) not in (2, 3):
                raise TypeError("fit_sequences: each batch must be (x, y) or (x, y, mask)")
            x, y = batch[0], batch[1]
            mask = batch[2] if len(batch) == 3 else None
            r = bptt_step(model, loss_fn, optimizer, x, y, mask=mask, clip_norm=clip_norm, constraint=constraint,
                          diverge_above=diverge_above)
            hist["loss"].append(r["loss"])
            hist["grad_norm"].append(r["grad_norm"])
            hist["updates"] += 1
            if on_update is not None:
                on_update({"update": i, **r})
            if bar.bar is not None:
                bar.update({"loss": f"{r['loss']:.4f}"})
            if r["diverged"]:
                hist["diverged"], hist["diverged_at"] = True, i
                if stop_on_divergence:
                    break
    finally:
        if bar.bar is not None:
            bar.bar.close()
    hist["time"] = time.perf_counter() - t0
    hist["epoch_loss"].append(float(np.mean(hist["loss"])) if hist["loss"] else math.nan)
    return hist


def train_tbptt(model, loss_fn, optimizer, x, y, *, k1: int, k2=None, epochs: int = 1, state=None,
                clip_norm=None, constraint=None, progress: bool = True, on_update=None,
                stop_on_divergence: bool = True, diverge_above=None) -> dict:
    """Truncated BPTT(k1, k2) over streams ``x`` / ``y`` (time-major ``[T, B, ...]``;
    ``[B, T, ...]`` when the model is ``batch_first``), e.g. from :func:`fusedlearn.data.batchify`.

    Every update takes ``k1`` new steps ``[s, s + k1)`` and back-propagates through
    the last ``k2`` steps ending at ``s + k1``; the loss of an update is that of its
    new steps inside this window.  The hidden state is carried from update to update
    as a value: no gradient flows into earlier updates (the gradient with respect to
    a window's initial state is dropped).  ``k2`` defaults to ``k1`` (the usual
    chunked TBPTT of language models); ``k1 = k2 = T`` is full BPTT.

    * ``k2 < k1``: the first ``k1 - k2`` new steps run forward only (their losses are
      reported but give no gradient), then the last ``k2`` run with BPTT.
    * ``k2 > k1``: the window reaches ``k2 - k1`` steps back into earlier updates.
      Those steps are re-run from a saved state (with the current weights): a
      forward-only pass after each backward computes the state where the next
      window starts, so an update costs ``k2`` forward + backward steps plus
      ``k1`` extra forward steps.  Earlier steps' losses are not counted again;
      only their gradient path is.

    Each epoch starts from ``state`` (``None``: zeros).  ``on_update(info)`` gets
    ``{'epoch', 'update', 'start', 'end', 'window', 'state_in', 'state_out',
    'loss', 'grad_norm', 'diverged'}`` after each update.  Returns the history
    (per-update ``loss`` / ``grad_norm``, per-epoch ``epoch_loss`` = mean loss
    per step over all steps, ``updates``, ``time``, ``diverged``,
    ``diverged_at``, ``state`` the final state).
    """
    for name, v in (("k1", k1), ("epochs", epochs)) + ((("k2", k2),) if k2 is not None else ()):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
            raise TypeError(f"train_tbptt: {name} must be an integer, got {type(v).__name__}")
    k1 = int(k1)
    k2 = k1 if k2 is None else int(k2)
    if k1 < 1 or k2 < 1:
        raise ValueError(f"train_tbptt: k1 and k2 must be >= 1, got k1={k1}, k2={k2}")
    if int(epochs) < 0:
        raise ValueError(f"train_tbptt: epochs must be >= 0, got {epochs}")
    _check_common(clip_norm)
    tax = _time_axis(model)
    x_arr, y_arr = np.asarray(x), np.asarray(y)
    if x_arr.ndim <= tax or y_arr.ndim <= tax or x_arr.shape[tax] != y_arr.shape[tax]:
        raise ValueError(f"train_tbptt: x and y must share the time axis {tax}, got shapes {x_arr.shape} "
                         f"and {y_arr.shape}")
    T = x_arr.shape[tax]
    if T == 0:
        raise ValueError("train_tbptt: the streams are empty")
    hist = _new_history()
    init_state = copy_state(state)
    t0 = time.perf_counter()
    n_updates = -(-T // k1)
    update = 0
    for epoch in range(1, int(epochs) + 1):
        bar = _Progress(progress, n_updates, epoch, int(epochs))
        h = copy_state(init_state)
        saved = None  # (position, state) of a window start that lies in an earlier update
        total_loss, total_steps = 0.0, 0
        s = 0
        try:
            while s < T:
                e = min(s + k1, T)
                w0 = max(0, e - k2)
                if w0 >= s:
                    if w0 > s:  # k2 < k1: forward only up to the window
                        out, h = model(_tslice(x_arr, s, w0, tax), h)
                        total_loss += float(loss_fn(out, _tslice(y_arr, s, w0, tax))[0]) * (w0 - s)
                        total_steps += w0 - s
                    h_w0 = h
                else:  # k2 > k1: the window starts in an earlier update, at a saved state
                    assert saved is not None and saved[0] == w0
                    h_w0 = saved[1]
                optimizer.zero_grad()
                out, h_e = model(_tslice(x_arr, w0, e, tax), h_w0)
                lo = max(w0, s) - w0  # the new steps are [lo, e - w0) of the window
                value, g_new = loss_fn(_tslice(out, lo, e - w0, tax), _tslice(y_arr, w0 + lo, e, tax))
                loss = float(value)
                if lo:
                    g = np.zeros(out.shape, dtype=np.asarray(g_new).dtype)
                    if tax == 0:
                        g[lo:] = g_new
                    else:
                        g[:, lo:] = g_new
                else:
                    g = g_new
                model.backward(g)
                e_next = min(e + k1, T)
                w_next = max(0, e_next - k2)
                if e < T and w_next < e:  # the next window starts inside this one: save its state
                    if w_next == w0:
                        saved = (w0, h_w0)
                    else:
                        saved = (w_next, model(_tslice(x_arr, w0, w_next, tax), h_w0)[1])
                norm, bad = _finish_update(model, optimizer, clip_norm, constraint, loss, diverge_above)
                hist["loss"].append(loss)
                hist["grad_norm"].append(norm)
                hist["updates"] += 1
                total_loss += loss * (e - w0 - lo)
                total_steps += e - w0 - lo
                if on_update is not None:
                    on_update({"epoch": epoch, "update": update, "start": s, "end": e, "window": (w0, e),
                               "state_in": h_w0, "state_out": h_e, "loss": loss, "grad_norm": norm,
                               "diverged": bad})
                if bar.bar is not None:
                    bar.update({"loss": f"{loss:.4f}"})
                update += 1
                h = h_e
                s = e
                if bad:
                    hist["diverged"] = True
                    hist["diverged_at"] = update - 1
                    if stop_on_divergence:
                        break
        finally:
            if bar.bar is not None:
                bar.bar.close()
        hist["epoch_loss"].append(total_loss / total_steps if total_steps else math.nan)
        if hist["diverged"] and stop_on_divergence:
            break
    hist["time"] = time.perf_counter() - t0
    hist["state"] = h
    return hist
