"""Recurrent layers, one layer and one direction at a time, through the fused kernels.

``rnn_forward`` runs a whole sequence in C++: the input projection of every
step is one GEMM, each step one recurrent GEMM followed by the fused cell
(all gate arithmetic in one pass); ``rnn_backward`` runs BPTT the same way and
forms the weight gradients as GEMMs over all ``T * B`` rows.  ``cell`` is
``"lstm"`` (torch's gate order i, f, g, o; optional peepholes ``peep = [p_i,
p_f, p_o]``, Greff et al.), ``"gru"`` (torch / cuDNN: reset applied to
``W_hn h + b_hn``) or ``"gru_cho"`` (Cho et al. 2014: reset applied to ``h``
before the product).  Weights have torch's layout (``w_ih [G*H, I]``,
``w_hh [G*H, H]``).

``lengths`` (int array ``[B]``, each in ``[1, T]``, any order): steps at or
beyond a sequence's length keep its state and output zeros, as torch's packed
sequences do; a reverse layer starts each sequence at its own last step.
Padded input positions must be finite (they enter the weight-gradient GEMMs
multiplied by zero).

The returned ``cache`` holds the workspaces; ``rnn_backward`` consumes it (the
gate buffer is overwritten by gradients), so call it at most once per forward.
``rnn_cell`` exposes one fused cell phase (for custom loops and tests).
"""
from __future__ import annotations

import numpy as np

from .. import _C
from .gemm import _empty_like

__all__ = ["rnn_forward", "rnn_backward", "rnn_cell", "gate_count"]

_GATES = {"lstm": 4, "gru": 3, "gru_cho": 3}


def gate_count(cell: str) -> int:
    try:
        return _GATES[cell]
    except KeyError:
        raise ValueError(f"cell: expected 'lstm', 'gru' or 'gru_cho', got {cell!r}") from None


def _zeros_like(x, shape):
    out = _empty_like(x, shape)
    out[...] = 0
    return out


def _workspace(pool, name, x, shape):
    """An uninitialised array for workspace `name`: the one kept in `pool` when
    its shape and dtype fit (numpy only), else a new one, which is kept there."""
    if pool is not None and isinstance(x, np.ndarray):
        a = pool.get(name)
        if isinstance(a, np.ndarray) and a.shape == shape and a.dtype == x.dtype:
            return a
        a = np.empty(shape, x.dtype)
        pool[name] = a
        return a
    return _empty_like(x, shape)


def rnn_forward(cell, x, w_ih, w_hh, b_ih=None, b_hh=None, *, peep=None, h0=None, c0=None, lengths=None,
                reverse=False, y=None, y_offset=0, workspace=None):
    """Run one layer-direction over ``x`` ``[T, B, I]``.

    Writes the outputs into columns ``[y_offset, y_offset + H)`` of ``y``
    ``[T, B, Y]`` (allocated as ``[T, B, H]`` when not given) and returns
    ``(y, h_n, c_n, cache)``; ``c_n`` is None except for the LSTM.
    ``workspace`` (optional dict, kept by the caller between calls): the
    internal buffers (the gate buffer alone is ``T*B*G*H`` values) are taken
    from it when their shapes fit and stored in it otherwise, which saves the
    allocation -- and the kernel's zeroing of fresh pages -- on every call.  A
    later forward with the same dict overwrites the buffers, so the cache of an
    earlier call must not be used for a backward after it.
    """
    G = gate_count(cell)
    T, B, _ = x.shape
    H = w_hh.shape[1] if len(w_hh.shape) == 2 else 0
    ws = {
        "gates": _workspace(workspace, "gates", x, (T * B, G * H)),
        "hs": _workspace(workspace, "hs", x, ((T + 1) * B, H)),
        "aux": _workspace(workspace, "aux", x, ((T + 1 if cell == "lstm" else T) * B, H)),
        "work": _workspace(workspace, "work", x, (B, G * H)),
    }
    if y is None:
        y = _empty_like(x, (T, B, H))
    h_n = _empty_like(x, (B, H))
    c_n = _empty_like(x, (B, H)) if cell == "lstm" else None
    arrays = dict(x=x, w_ih=w_ih, w_hh=w_hh, b_ih=b_ih, b_hh=b_hh, peep=peep, h0=h0, c0=c0, y=y, h_n=h_n,
                  c_n=c_n, **ws)
    _C.rnn_forward(cell, bool(reverse), arrays, int(y_offset), lengths)
    cache = dict(cell=cell, reverse=bool(reverse), lengths=lengths, x=x, w_ih=w_ih, w_hh=w_hh, b_ih=b_ih,
                 b_hh=b_hh, peep=peep, **ws)
    return y, h_n, c_n, cache


def rnn_backward(cache, dy=None, *, dy_offset=0, dh_n=None, dc_n=None, dx=None, dx_accumulate=False,
                 dw_ih=None, dw_hh=None, db_ih=None, db_hh=None, dpeep=None):
    """Backward of :func:`rnn_forward` (consumes ``cache``).

    ``dy`` ``[T, B, Y]``: gradient of the outputs, this direction's columns at
    ``dy_offset`` (None: zero).  ``dh_n`` / ``dc_n``: gradients of the final
    states (None: zero).  The weight gradients are *accumulated* into
    ``dw_ih``, ``dw_hh``, ``db_ih``, ``db_hh``, ``dpeep`` (zero-filled arrays are
    allocated for those not given); ``dx`` is written, or added to with
    ``dx_accumulate=True``.  Returns ``dict(dx, dh0, dc0, dw_ih, dw_hh, db_ih,
    db_hh, dpeep)``.
    """
    if cache.get("consumed"):
        raise RuntimeError("rnn_backward: this forward's cache was already used by a backward pass; "
                           "run the forward again")
    x = cache["x"]
    T, B, I = x.shape
    H = cache["w_hh"].shape[1]
    G = gate_count(cache["cell"])
    if dx is None:
        dx = _empty_like(x, (T, B, I))
        dx_accumulate = False
    grads = dict(
        dw_ih=dw_ih if dw_ih is not None else _zeros_like(x, (G * H, I)),
        dw_hh=dw_hh if dw_hh is not None else _zeros_like(x, (G * H, H)),
        db_ih=db_ih if db_ih is not None or cache["b_ih"] is None else _zeros_like(x, (G * H,)),
        db_hh=db_hh if db_hh is not None or cache["b_hh"] is None else _zeros_like(x, (G * H,)),
        dpeep=dpeep if dpeep is not None or cache["peep"] is None else _zeros_like(x, (3 * H,)),
    )
    dh0 = _empty_like(x, (B, H))
    dc0 = _empty_like(x, (B, H)) if cache["cell"] == "lstm" else None
    arrays = {k: cache[k] for k in ("x", "w_ih", "w_hh", "b_ih", "b_hh", "peep", "gates", "hs", "aux", "work")}
    arrays.update(dy=dy, dh_n=dh_n, dc_n=dc_n, dx=dx, dh0=dh0, dc0=dc0, **grads)
    cache["consumed"] = True
    _C.rnn_backward(cache["cell"], cache["reverse"], arrays, int(dy_offset), cache["lengths"], bool(dx_accumulate))
    return dict(dx=dx, dh0=dh0, dc0=dc0, **grads)


def rnn_cell(phase, arrays, B, H, t=0, lengths=None):
    """One fused cell phase in place on ``[B, *]`` arrays given by name.

    Phases: ``lstm_fwd``, ``lstm_bwd``, ``gru_fwd``, ``gru_bwd``, ``cho_fwd1``,
    ``cho_fwd2``, ``cho_bwd1``, ``cho_bwd2``; see ``csrc/cpu/rnn/rnn_args.h``
    for what each reads and writes.  Row ``b`` is active iff ``t < lengths[b]``.
    """
    _C.rnn_cell(phase, arrays, int(B), int(H), int(t), lengths)
