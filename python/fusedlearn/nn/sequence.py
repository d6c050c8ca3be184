"""``SequenceModel``: [Embedding →] recurrent layer → Linear per timestep, with explicit backward."""
from __future__ import annotations

import numpy as np

from .module import Module


def copy_state(state):
    """A copy of a recurrent state (an array, or a tuple of arrays such as LSTM's ``(h, c)``)."""
    if state is None:
        return None
    if isinstance(state, tuple):
        return tuple(copy_state(s) for s in state)
    return np.array(state, copy=True)


class SequenceModel(Module):
    """A recurrent sequence model: ``embedding`` (optional) → ``rnn`` → ``head`` (optional).

    ``rnn`` is a recurrent layer with the interface of ``fl.nn.GRU`` / ``fl.nn.LSTM``:
    ``rnn(x, hx) -> (output, state)`` and ``rnn.backward(grad_output, grad_state)``
    returning the input gradient, with the initial state's gradient left in
    ``rnn.grad_hx``.  ``head`` (e.g. ``Linear(hidden, classes)``) is applied to
    every timestep of the output (``return_sequences=True``) or to the last one
    only (``False``: output ``[B, out]``, as for the adding problem).

    ``forward(x, state=None) -> (output, final_state)``: ``x`` holds integer
    tokens ``[T, B]`` when there is an embedding, else features ``[T, B, I]``
    (``[B, T, ...]`` when the rnn is ``batch_first``).  The returned state is a
    copy, safe to keep across later calls (truncated BPTT carries it).
    ``backward(grad_out, grad_state=None)`` accumulates every parameter gradient
    and returns the gradient with respect to ``x`` (``None`` for tokens);
    :attr:`grad_state` is then the gradient with respect to the initial state.
    """

    def __init__(self, rnn, head=None, embedding=None, *, return_sequences: bool = True) -> None:
        super().__init__()
        for name, m in (("rnn", rnn), ("head", head), ("embedding", embedding)):
            if m is not None and not isinstance(m, Module):
                raise TypeError(f"SequenceModel: {name} must be a fusedlearn Module, got {type(m).__name__}")
        if rnn is None:
            raise TypeError("SequenceModel: rnn is required")
        # Registration order gives the state-dict order embedding, rnn, head.
        if embedding is not None:
            self.embedding = embedding
        self.rnn = rnn
        if head is not None:
            self.head = head
        self._has_embedding = embedding is not None
        self._has_head = head is not None
        self.return_sequences = bool(return_sequences)
        self.grad_state = None
        self._out_shape = None

    @property
    def batch_first(self) -> bool:
        return bool(getattr(self.rnn, "batch_first", False))

    def extra_repr(self) -> str:
        return "" if self.return_sequences else "return_sequences=False"

    def forward(self, x, state=None):
        h = self.embedding(x) if self._has_embedding else x
        out, final = self.rnn(h, state)
        self._out_shape = out.shape
        if not self.return_sequences:
            out = out[:, -1] if self.batch_first else out[-1]
        if self._has_head:
            out = self.head(out)
        return out, copy_state(final)

    def backward(self, grad_out, grad_state=None):
        if self._out_shape is None:
            raise RuntimeError("SequenceModel: backward() called before forward()")
        g = self.head.backward(grad_out) if self._has_head else np.asarray(grad_out)
        if not self.return_sequences:
            full = np.zeros(self._out_shape, dtype=g.dtype)
            if self.batch_first:
                full[:, -1] = g
            else:
                full[-1] = g
            g = full
        gx = self.rnn.backward(g, grad_state)
        self.grad_state = getattr(self.rnn, "grad_hx", None)
        if self._has_embedding:
            self.embedding.backward(gx)
            return None
        return gx
