"""Matrix products with a fused epilogue.

``gemm`` computes ``out = act(alpha * op(a) @ op(b) + beta * c + bias)`` in one
pass (row-major, ``op(x)`` is ``x`` or ``x.T``), ``linear`` is
``act(x @ weight.T + bias)`` with torch's weight layout ``[out, in]``.
float32 runs the packed, cache-blocked SIMD kernel of the selected instruction
set; float64 a reference path (for gradient checks).  Arrays may be numpy
arrays or torch tensors (or anything speaking DLPack / the buffer protocol);
2-D sub-matrices whose rows are contiguous (``a[:, 2:7]``) and transposed
views (``w.T``, inputs only) are used in place.
"""
from __future__ import annotations

from .. import _C

__all__ = ["gemm", "linear"]

def _shape(x, name):
    shape = getattr(x, "shape", None)
    if shape is None:
        raise TypeError(
            f"{name}: expected an array supporting DLPack or the buffer protocol "
            f"(numpy.ndarray, torch.Tensor), got {type(x).__name__}"
        )
    return shape if type(shape) is tuple else tuple(int(s) for s in shape)


def _matrix_dims(x, name, trans):
    shape = _shape(x, name)
    if len(shape) != 2:
        raise ValueError(f"{name}: expected a 2-D matrix, got shape {shape}")
    return (shape[1], shape[0]) if trans else shape


def _is_torch(x):
    return type(x).__module__.startswith("torch")


def _empty_like(x, shape):
    """An uninitialised array of `shape` with x's kind, dtype and device."""
    if _is_torch(x):
        import torch

        return torch.empty(shape, dtype=x.dtype, device=x.device)
    import numpy as np

    dtype = getattr(x, "dtype", None)
    if dtype is None or np.dtype(dtype).kind != "f":
        dtype = np.float32  # _C raises the dtype error on `a` itself
    return np.empty(shape, dtype=dtype)


def gemm(a, b, c=None, *, trans_a=False, trans_b=False, alpha=1.0, beta=0.0, bias=None, activation=None,
         out=None, bias_axis="col", preact_out=None):
    """``out = act(alpha * op(a) @ op(b) + beta * c + bias)``; returns ``out``.

    a, b: 2-D float32 or float64 arrays whose rows (or, for views such as
    ``w.T``, columns) are contiguous; a leading dimension larger than the row,
    as in ``x[:, 2:7]``, is fine.  ``trans_a`` / ``trans_b`` use ``a.T`` /
    ``b.T``; nothing is copied either way.  ``c`` (M x N) is read
    when ``beta != 0`` (``beta != 0`` without ``c`` is an error); with
    ``beta == 0`` it is never read, so NaN in it does not propagate.
    ``bias`` has N elements (``bias_axis="col"``: added to every row) or M
    (``"row"``: added to every column).  ``activation``: None / "identity",
    "relu", "tanh", "sigmoid".  ``preact_out`` (M x N, optional) receives the
    argument of the activation.  ``out`` is allocated like ``a`` (numpy or
    torch, same dtype and device) when not given; ``out`` may be ``c``.
    """
    if out is None:
        m, _ = _matrix_dims(a, "a", trans_a)
        _, n = _matrix_dims(b, "b", trans_b)
        out = _empty_like(a, (m, n))
    if c is not None and c is not out and beta != 0 and _is_torch(out) and out.device.type != "cpu":
        # the CUDA kernel reads C from out itself: copy on the device first
        shape = _matrix_dims(out, "out", False)
        if _shape(c, "c") != shape:
            raise ValueError(f"c: expected shape {shape} (the output's), got {_shape(c, 'c')}")
        out.copy_(c)
        c = out
    # positional: keyword parsing would cost more than a small product
    _C.gemm(a, b, out, c, trans_a, trans_b, alpha, beta, bias, bias_axis, activation, preact_out)
    return out


def linear(x, weight, bias=None, activation=None, preact_out=None, out=None):
    """``act(x @ weight.T + bias)`` with torch's layout: weight is ``[out_features, in_features]``.

    ``x`` is ``[batch, in_features]`` or ``[*, in_features]`` (leading
    dimensions are flattened and restored).  ``preact_out`` (optional, the
    output's shape) receives ``x @ weight.T + bias`` before the activation.
    """
    xs = _shape(x, "x")
    ws = _shape(weight, "weight")
    if len(ws) != 2:
        raise ValueError(f"weight: expected a 2-D matrix [out_features, in_features], got shape {ws}")
    if len(xs) < 1:
        raise ValueError(f"x: expected at least 1 dimension [..., in_features], got shape {xs}")
    if xs[-1] != ws[1]:
        raise ValueError(f"linear: x has {xs[-1]} input features (shape {xs}) but weight expects {ws[1]} "
                         f"(shape {ws} = [out_features, in_features])")
    lead = xs[:-1]
    x2 = x if len(xs) == 2 else x.reshape(-1, xs[-1])
    out_shape = tuple(lead) + (ws[0],)
    if out is None:
        out = _empty_like(x, out_shape)
    elif tuple(_shape(out, "out")) != out_shape:
        raise ValueError(f"out: expected shape {out_shape}, got {tuple(_shape(out, 'out'))}")
    out2 = out if len(out_shape) == 2 else _view2(out, ws[0], "out")
    pre2 = None
    if preact_out is not None:
        if tuple(_shape(preact_out, "preact_out")) != out_shape:
            raise ValueError(f"preact_out: expected shape {out_shape} (the output's), got {tuple(_shape(preact_out, 'preact_out'))}")
        pre2 = preact_out if len(out_shape) == 2 else _view2(preact_out, ws[0], "preact_out")
    _C.gemm(x2, weight, out2, None, False, True, 1.0, 0.0, bias, "col", activation, pre2)
    return out


def _view2(x, cols, name):
    """A 2-D view (never a copy) of an N-D output array."""
    if _is_torch(x):
        try:
            return x.view(-1, cols)
        except RuntimeError as e:
            raise ValueError(f"{name}: cannot be viewed as a 2-D matrix without a copy ({e})") from None
    import numpy as np

    try:
        return np.reshape(x, (-1, cols), copy=False)
    except ValueError:
        raise ValueError(f"{name}: cannot be viewed as a 2-D matrix without a copy; pass a contiguous array") from None
