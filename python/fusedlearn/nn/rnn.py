"""Recurrent layers: ``LSTM`` and ``GRU`` with torch's interface and weight layout.

Each layer-direction runs in C++ over the whole sequence (``fusedlearn.functional.rnn``):
one GEMM for the input projection of all steps, one recurrent GEMM plus one fused
cell pass per step, and BPTT in ``backward`` with the weight gradients formed as
GEMMs over all ``T * B`` rows.

Parameters (names, shapes, gate order and initialisation ``U(-1/sqrt(H), 1/sqrt(H))``
exactly as ``torch.nn.LSTM`` / ``torch.nn.GRU``, so a torch ``state_dict`` loads)::

    weight_ih_l{k}[_reverse]  [G*H, input_size or D*H]     G = 4 (LSTM: i, f, g, o), 3 (GRU: r, z, n)
    weight_hh_l{k}[_reverse]  [G*H, H]
    bias_ih_l{k}[_reverse], bias_hh_l{k}[_reverse]  [G*H]   (bias=True)
    weight_ci_l{k}, weight_cf_l{k}, weight_co_l{k}[_reverse]  [H]   (LSTM, peephole=True; our extension)

Extensions beyond torch:

* ``peephole=True`` (LSTM): Greff et al.'s diagonal peepholes,
  ``i = s(.. + w_ci * c_{t-1})``, ``f = s(.. + w_cf * c_{t-1})``, ``o = s(.. + w_co * c_t)``.
* ``residual=True``: GNMT-style residual connections between stacked layers: the
  output of layer ``k >= 1`` is ``rnn_k(x_k) + x_k`` where ``x_k`` is that layer's
  input (after inter-layer dropout).  For ``k >= 1`` input and output both have
  ``D * H`` features, so the sum is always defined; layer 0 (input_size features)
  has no residual.
* ``reset_after`` (GRU): ``True`` is torch's / cuDNN's convention
  ``n = tanh(W_in x + b_in + r * (W_hn h + b_hn))``; ``False`` is Cho et al.'s
  original ``n = tanh(W_in x + b_in + W_hn (r * h) + b_hn)``.  The parameters are
  the same; the two are not weight-compatible.

``forward(x, hx=None, lengths=None)``: ``x`` is ``[T, B, I]`` (``[B, T, I]`` with
``batch_first``); ``hx`` is ``h_0`` (GRU) or ``(h_0, c_0)`` (LSTM), each
``[D*num_layers, B, H]``, zeros when None.  ``lengths`` (int ``[B]``, each in
``[1, T]``, any order) gives variable-length sequences with the semantics of
torch's packed sequences: outputs beyond a sequence's length are zero and its
final state is the one at its last step.  Returns ``(output, h_n)`` (GRU) or
``(output, (h_n, c_n))`` (LSTM), ``output`` of shape ``[T, B, D*H]``.  A 2-D ``x``
``[T, I]`` is one unbatched sequence, as in torch: states ``[D*num_layers, H]``,
output ``[T, D*H]`` (``batch_first`` does not apply; no ``lengths``).

``backward(grad_output, grad_h_n=None)`` accumulates the parameter gradients and
returns the gradient of ``x``; ``grad_h_n`` is the gradient of ``h_n`` (GRU) or a
tuple ``(grad_h_n, grad_c_n)`` (either may be None).  Afterwards ``grad_hx`` holds
the gradient of the initial state, with ``hx``'s structure (zeros if hx was None).
One backward per forward (the forward's workspaces are consumed).

Dropout (``dropout > 0``) applies to the outputs of every layer but the last, in
training mode only, with masks from the layer's own seeded generator
(:meth:`manual_seed`, :meth:`get_rng_state`, :meth:`set_rng_state`).
"""
from __future__ import annotations

import math

import numpy as np

from ..functional import rnn as FR
from . import init
from .layers import Dropout
from .module import Module, as_float_input
from .parameter import Parameter

__all__ = ["LSTM", "GRU"]


class _RNNBase(Module):
    _cell = ""

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, batch_first=False, dropout=0.0,
                 bidirectional=False, *, peephole=False, residual=False, reset_after=True, dtype=np.float32,
                 generator=None):
        super().__init__()
        for name, v in (("input_size", input_size), ("hidden_size", hidden_size), ("num_layers", num_layers)):
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
                raise TypeError(f"{type(self).__name__}: {name} must be an int, got {type(v).__name__}")
        if input_size < 0 or hidden_size <= 0 or num_layers <= 0:
            raise ValueError(f"{type(self).__name__}: input_size must be >= 0 and hidden_size, num_layers > 0, got "
                             f"input_size={input_size}, hidden_size={hidden_size}, num_layers={num_layers}")
        dropout = float(dropout)
        if not 0.0 <= dropout <= 1.0:
            raise ValueError(f"{type(self).__name__}: dropout should be a number in range [0, 1], got {dropout}")
        dtype = np.dtype(dtype)
        if dtype.kind != "f":
            raise TypeError(f"{type(self).__name__}: dtype must be floating-point, got {dtype}")
        self.input_size = int(input_size)
        self.hidden_size = int(hidden_size)
        self.num_layers = int(num_layers)
        self.bias = bool(bias)
        self.batch_first = bool(batch_first)
        self.dropout = dropout
        self.bidirectional = bool(bidirectional)
        self.peephole = bool(peephole)
        self.residual = bool(residual)
        self.reset_after = bool(reset_after)
        G = FR.gate_count(self._kernel_cell())
        H = self.hidden_size
        D = 2 if self.bidirectional else 1
        for layer in range(self.num_layers):
            in_size = self.input_size if layer == 0 else D * H
            for d in range(D):
                sfx = f"_l{layer}" + ("_reverse" if d else "")
                setattr(self, "weight_ih" + sfx, Parameter(np.empty((G * H, in_size), dtype)))
                setattr(self, "weight_hh" + sfx, Parameter(np.empty((G * H, H), dtype)))
                if self.bias:
                    setattr(self, "bias_ih" + sfx, Parameter(np.empty(G * H, dtype)))
                    setattr(self, "bias_hh" + sfx, Parameter(np.empty(G * H, dtype)))
                if self.peephole:
                    for gate in ("ci", "cf", "co"):
                        setattr(self, f"weight_{gate}" + sfx, Parameter(np.empty(H, dtype)))
        gen = init._rng(generator)
        self.reset_parameters(gen)
        # the inter-layer dropout: nn.Dropout's masks and generator, kept out of the module
        # tree so the structure (and state dict) stays torch's
        object.__setattr__(self, "_drop", Dropout(self.dropout, seed=int(gen.integers(0, 2 ** 63 - 1))))
        self._ctx = None
        self.grad_hx = None

    # ---- set-up ----------------------------------------------------------------------
    def _kernel_cell(self) -> str:
        return self._cell

    def reset_parameters(self, generator=None) -> None:
        """torch's initialisation: every parameter ``U(-1/sqrt(H), 1/sqrt(H))``."""
        gen = init._rng(generator)
        bound = 1.0 / math.sqrt(self.hidden_size)
        for p in self.parameters():
            init.uniform_(p, -bound, bound, generator=gen)

    def manual_seed(self, seed) -> None:
        """Reseed the generator of the inter-layer dropout masks."""
        self._drop.manual_seed(seed)

    def get_rng_state(self) -> dict:
        return self._drop.get_rng_state()

    def set_rng_state(self, state: dict) -> None:
        self._drop.set_rng_state(state)

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}"
        if self.num_layers != 1:
            s += f", num_layers={self.num_layers}"
        if not self.bias:
            s += ", bias=False"
        if self.batch_first:
            s += ", batch_first=True"
        if self.dropout:
            s += f", dropout={self.dropout}"
        if self.bidirectional:
            s += ", bidirectional=True"
        if self.peephole:
            s += ", peephole=True"
        if self.residual:
            s += ", residual=True"
        return s

    def _params(self, layer, d):
        sfx = f"_l{layer}" + ("_reverse" if d else "")
        g = lambda n: getattr(self, n + sfx)  # noqa: E731
        out = dict(w_ih=g("weight_ih"), w_hh=g("weight_hh"), b_ih=None, b_hh=None, peep=None)
        if self.bias:
            out["b_ih"], out["b_hh"] = g("bias_ih"), g("bias_hh")
        if self.peephole:
            out["peep"] = (g("weight_ci"), g("weight_cf"), g("weight_co"))
        return out

    # ---- checks ------------------------------------------------------------------------
    def _check_state(self, h, name, B, dtype):
        D = 2 if self.bidirectional else 1
        expected = (D * self.num_layers, B, self.hidden_size)
        h = as_float_input(h, f"{type(self).__name__}: {name}")
        if h.dtype != dtype:
            raise TypeError(f"{type(self).__name__}: {name} has dtype {h.dtype} but the layer is {dtype} "
                            f"(cast it, e.g. {name}.astype(np.{dtype}))")
        if h.shape != expected:
            raise ValueError(f"{type(self).__name__}: expected {name} of shape {expected}, got {tuple(h.shape)}")
        return np.ascontiguousarray(h)

    def _split_hx(self, hx, B, dtype):
        raise NotImplementedError

    # ---- computation ---------------------------------------------------------------------
    def forward(self, x, hx=None, lengths=None):
        """A 2-D ``x`` of shape (seq, input_size) is one unbatched sequence, as in torch
        (``batch_first`` does not apply; states are (D * num_layers, hidden_size))."""
        who = type(self).__name__
        x = as_float_input(x, who)
        if x.ndim != 2:
            return self._forward_batched(x, hx, lengths)
        if lengths is not None:
            raise ValueError(f"{who}: lengths are for batches; an unbatched (2-D) input is one sequence")
        axis = 0 if self.batch_first else 1
        out, hn = self._forward_batched(np.expand_dims(x, axis), self._with_batch_axis(hx), None)
        self._ctx["unbatched"] = True
        return np.take(out, 0, axis=axis), _per_state(lambda h: h[:, 0], hn)

    def _with_batch_axis(self, states):
        """Unbatched states (D * num_layers, H) (or a tuple of them, None kept) as batches of one."""
        def one(h):
            h = np.asarray(h)
            if h.ndim != 2:
                raise ValueError(f"{type(self).__name__}: for an unbatched (2-D) input the states are 2-D "
                                 f"(D * num_layers, hidden_size), got shape {tuple(h.shape)}")
            return np.expand_dims(h, 1)
        return _per_state(one, states)

    def _forward_batched(self, x, hx, lengths):
        who = type(self).__name__
        dtype = self.weight_ih_l0.data.dtype
        if x.dtype != dtype:
            raise TypeError(f"{who}: input has dtype {x.dtype} but the layer's parameters are {dtype} "
                            f"(cast the input, e.g. x.astype(np.{dtype}), or the layer with .to(dtype=...))")
        if x.ndim != 3:
            raise ValueError(f"{who}: expected a 3-D input ({'batch, seq' if self.batch_first else 'seq, batch'}, "
                             f"input_size) or a 2-D unbatched one (seq, input_size), got shape {tuple(x.shape)}")
        if x.shape[-1] != self.input_size:
            raise ValueError(f"{who}: input.size(-1) must be equal to input_size. Expected {self.input_size}, "
                             f"got {x.shape[-1]}")
        xt = np.ascontiguousarray(x.transpose(1, 0, 2) if self.batch_first else x)
        T, B, _ = xt.shape
        if T == 0 or B == 0:
            raise ValueError(f"{who}: empty input of shape {tuple(x.shape)}")
        if lengths is not None:
            lengths = np.asarray(lengths)
            if lengths.dtype.kind not in "iu":
                raise TypeError(f"{who}: lengths must be an integer array, got dtype {lengths.dtype}")
            if lengths.shape != (B,):
                raise ValueError(f"{who}: lengths must have shape ({B},) (one per sequence), got {lengths.shape}")
            if lengths.min() < 1 or lengths.max() > T:
                raise ValueError(f"{who}: every length must be in [1, {T}] (the sequence length), got "
                                 f"min {lengths.min()}, max {lengths.max()}")
            lengths = np.ascontiguousarray(lengths, dtype=np.int64)
        h0, c0, had_hx = self._split_hx(hx, B, dtype)
        cell = self._kernel_cell()
        H, D, L = self.hidden_size, (2 if self.bidirectional else 1), self.num_layers
        h_n = np.empty((D * L, B, H), dtype)
        c_n = np.empty((D * L, B, H), dtype) if cell == "lstm" else None
        caches, masks = [], []
        inp = xt
        for layer in range(L):
            y = np.empty((T, B, D * H), dtype)
            layer_caches = []
            for d in range(D):
                k = layer * D + d
                p = self._params(layer, d)
                peep = None if p["peep"] is None else np.concatenate([q.data for q in p["peep"]])
                _, hn, cn, cache = FR.rnn_forward(
                    cell, inp, p["w_ih"].data, p["w_hh"].data,
                    None if p["b_ih"] is None else p["b_ih"].data, None if p["b_hh"] is None else p["b_hh"].data,
                    peep=peep, h0=None if h0 is None else h0[k], c0=None if c0 is None else c0[k],
                    lengths=lengths, reverse=bool(d), y=y, y_offset=d * H, workspace=self._workspace(k))
                h_n[k] = hn
                if c_n is not None:
                    c_n[k] = cn
                layer_caches.append(cache)
            caches.append(layer_caches)
            if self.residual and layer >= 1:
                y += inp
            mask = None
            if layer < L - 1 and self.training and self.dropout > 0.0:
                self._drop.train(True)
                y = self._drop.forward(y)
                mask = self._drop._mask
            masks.append(mask)
            inp = y
        self._ctx = dict(caches=caches, masks=masks, T=T, B=B, had_hx=had_hx, dtype=dtype)
        out = np.ascontiguousarray(inp.transpose(1, 0, 2)) if self.batch_first else inp
        return out, (h_n if c_n is None else (h_n, c_n))

    def _workspace(self, k):
        """The buffers layer-direction k reuses from one forward to the next (a
        new forward invalidates the previous one's cache anyway)."""
        pools = self.__dict__.setdefault("_workspaces", {})
        return pools.setdefault(k, {})

    def _split_grad_hn(self, grad_h_n, shape, dtype):
        raise NotImplementedError

    def backward(self, grad_output, grad_h_n=None):
        if not (self._ctx and self._ctx.get("unbatched")):
            return self._backward_batched(grad_output, grad_h_n)
        axis = 0 if self.batch_first else 1
        g = None if grad_output is None else np.expand_dims(np.asarray(grad_output), axis)
        dx = self._backward_batched(g, self._with_batch_axis(grad_h_n))
        self.grad_hx = _per_state(lambda h: h[:, 0], self.grad_hx)
        return np.take(dx, 0, axis=axis)

    def _backward_batched(self, grad_output, grad_h_n):
        who = type(self).__name__
        ctx = self._ctx
        if ctx is None:
            raise RuntimeError(f"{who}: backward() called without a forward() (or twice for one forward)")
        T, B, dtype = ctx["T"], ctx["B"], ctx["dtype"]
        H, D, L = self.hidden_size, (2 if self.bidirectional else 1), self.num_layers
        out_shape = (B, T, D * H) if self.batch_first else (T, B, D * H)
        if grad_output is None:
            g = None
        else:
            g = np.asarray(grad_output)
            if g.shape != out_shape:
                raise ValueError(f"{who}.backward: grad_output has shape {g.shape}, the output had {out_shape}")
            g = np.ascontiguousarray(g.transpose(1, 0, 2) if self.batch_first else g, dtype=dtype)
        gh, gc = self._split_grad_hn(grad_h_n, (D * L, B, H), dtype)
        self._ctx = None
        dh0 = np.empty((D * L, B, H), dtype)
        dc0 = np.empty((D * L, B, H), dtype) if gc is not None or self._kernel_cell() == "lstm" else None
        for layer in range(L - 1, -1, -1):
            dx = None
            for d in range(D):
                k = layer * D + d
                p = self._params(layer, d)
                grads = {}
                for key, name in (("dw_ih", "w_ih"), ("dw_hh", "w_hh"), ("db_ih", "b_ih"), ("db_hh", "b_hh")):
                    if p[name] is not None:
                        if p[name].grad is None:
                            p[name].grad = np.zeros_like(p[name].data)
                        grads[key] = p[name].grad
                res = FR.rnn_backward(
                    ctx["caches"][layer][d], g, dy_offset=d * H,
                    dh_n=None if gh is None else gh[k], dc_n=None if gc is None else gc[k],
                    dx=dx, dx_accumulate=d > 0, **grads)
                dx = res["dx"]
                dh0[k] = res["dh0"]
                if res["dc0"] is not None:
                    dc0[k] = res["dc0"]
                if p["peep"] is not None:
                    for j, q in enumerate(p["peep"]):
                        part = res["dpeep"][j * H:(j + 1) * H]
                        if q.grad is None:
                            q.grad = part.copy()
                        else:
                            q.grad += part
            if self.residual and layer >= 1 and g is not None:
                dx += g
            if layer > 0 and ctx["masks"][layer - 1] is not None:
                dx *= ctx["masks"][layer - 1]
            g = dx
        self.grad_hx = dh0 if self._kernel_cell() != "lstm" else (dh0, dc0)
        return np.ascontiguousarray(g.transpose(1, 0, 2)) if self.batch_first else g


class LSTM(_RNNBase):
    """``torch.nn.LSTM`` (gates i, f, g, o), with optional peepholes and residual stacking.

    See the module docstring for the interface, parameters and extensions."""

    _cell = "lstm"

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, batch_first=False, dropout=0.0,
                 bidirectional=False, peephole=False, residual=False, dtype=np.float32, generator=None):
        super().__init__(input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional,
                         peephole=peephole, residual=residual, dtype=dtype, generator=generator)

    def _split_hx(self, hx, B, dtype):
        if hx is None:
            return None, None, False
        if not isinstance(hx, (tuple, list)) or len(hx) != 2:
            raise TypeError(f"LSTM: hx must be a tuple (h_0, c_0), got {type(hx).__name__}")
        return self._check_state(hx[0], "h_0", B, dtype), self._check_state(hx[1], "c_0", B, dtype), True

    def _split_grad_hn(self, grad_h_n, shape, dtype):
        if grad_h_n is None:
            return None, None
        if not isinstance(grad_h_n, (tuple, list)) or len(grad_h_n) != 2:
            raise TypeError("LSTM.backward: grad_h_n must be a tuple (grad_h_n, grad_c_n) or None")
        return tuple(None if a is None else _grad_state(a, shape, dtype, n)
                     for a, n in zip(grad_h_n, ("grad_h_n", "grad_c_n")))


class GRU(_RNNBase):
    """``torch.nn.GRU`` (gates r, z, n); ``reset_after=False`` gives Cho et al.'s original GRU.

    See the module docstring for the interface, parameters and extensions."""

    _cell = "gru"

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, batch_first=False, dropout=0.0,
                 bidirectional=False, residual=False, reset_after=True, dtype=np.float32, generator=None):
        super().__init__(input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional,
                         residual=residual, reset_after=reset_after, dtype=dtype, generator=generator)

    def _kernel_cell(self) -> str:
        return "gru" if self.reset_after else "gru_cho"

    def extra_repr(self) -> str:
        return super().extra_repr() + ("" if self.reset_after else ", reset_after=False")

    def _split_hx(self, hx, B, dtype):
        if hx is None:
            return None, None, False
        return self._check_state(hx, "h_0", B, dtype), None, True

    def _split_grad_hn(self, grad_h_n, shape, dtype):
        return (None if grad_h_n is None else _grad_state(grad_h_n, shape, dtype, "grad_h_n")), None


def _per_state(f, states):
    """f applied to a state, or to each of a tuple / list of them; None stays None."""
    if isinstance(states, (tuple, list)):
        return tuple(None if h is None else f(h) for h in states)
    return None if states is None else f(states)


def _grad_state(a, shape, dtype, name):
    a = np.asarray(a)
    if a.shape != shape:
        raise ValueError(f"backward: {name} must have shape {shape}, got {a.shape}")
    return np.ascontiguousarray(a, dtype=dtype)
