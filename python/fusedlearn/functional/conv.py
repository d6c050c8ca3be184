"""Convolution, pooling and batch normalisation (NCHW, as ``torch.nn.functional``).

Forward functions have torch's names, arguments and defaults; each has a
``*_backward`` twin computing the input (and parameter) gradients, which the
layers of :mod:`fusedlearn.nn` call.  Arrays are numpy arrays or torch
tensors (CPU: float32 / float64; CUDA: float32); outputs are allocated like
the input.

Equations (``Cg = C / groups``, ``Kg = K / groups``, ``g = k // Kg``)::

    conv2d:      y[n,k,i,j] = act(b[k] + sum_{c<Cg,r,s} w[k,c,r,s] x[n, g Cg + c, i sh - ph + r dh, j sw - pw + s dw])
    max_pool2d:  y = max over the (dilated) window; indices = flat h * W + w of the maximum (as torch)
    avg_pool2d:  y = window sum / divisor, divisor = window size clipped to the padded image
                 (count_include_pad) or to the image, or divisor_override
    batch_norm:  y = act((x - mean) / sqrt(var + eps) * weight + bias); training: biased batch
                 statistics, running_mean <- (1 - m) running_mean + m mean,
                 running_var <- (1 - m) running_var + m var * M / (M - 1) (M = N H W, torch's rule)

``activation`` (``None`` / ``'relu'``; conv2d also ``'tanh'`` / ``'sigmoid'``)
is applied in the same pass (the GEMM epilogue, or the normalising loop of
batch norm); the backward functions then need the forward ``output``.
"""
from __future__ import annotations

import numpy as np

from .. import _C
from .gemm import _empty_like, _is_torch, _shape

__all__ = [
    "conv2d", "conv2d_backward", "conv2d_output_shape", "conv2d_paths", "max_pool2d", "max_pool2d_backward", "avg_pool2d",
    "avg_pool2d_backward", "adaptive_avg_pool2d", "adaptive_avg_pool2d_backward", "batch_norm",
    "batch_norm_backward",
]

_CONV_ACTS = (None, "identity", "relu", "tanh", "sigmoid")


def _pair(v, name: str) -> tuple:
    if isinstance(v, (bool, np.bool_)):
        raise TypeError(f"{name}: expected an int or a pair of ints, got {v!r}")
    if isinstance(v, (int, np.integer)):
        return int(v), int(v)
    if isinstance(v, (tuple, list)) and len(v) == 2 and all(
            isinstance(e, (int, np.integer)) and not isinstance(e, (bool, np.bool_)) for e in v):
        return int(v[0]), int(v[1])
    if isinstance(v, (tuple, list)) and len(v) == 1 and isinstance(v[0], (int, np.integer)):
        return int(v[0]), int(v[0])
    raise TypeError(f"{name}: expected an int or a pair of ints, got {v!r}")


def _act_name(activation, allowed=_CONV_ACTS) -> str:
    if activation not in allowed:
        raise ValueError(f"activation: expected one of {allowed}, got {activation!r}")
    return "" if activation in (None, "identity") else activation


def _conv_padding(padding, weight_shape, stride, dilation):
    if isinstance(padding, str):
        if padding == "valid":
            return 0, 0
        if padding == "same":
            if stride != (1, 1):
                raise ValueError("padding='same' is not supported for strided convolutions")
            pads = []
            for k, d in zip(weight_shape[2:], dilation):
                total = d * (k - 1)
                if total % 2:
                    raise ValueError("padding='same' needs an even total padding d*(k-1) here "
                                     "(asymmetric padding is not supported); pad explicitly")
                pads.append(total // 2)
            return tuple(pads)
        raise ValueError(f"padding: expected an int, a pair, 'valid' or 'same', got {padding!r}")
    return _pair(padding, "padding")


def conv2d_output_shape(input_shape, weight_shape, stride=1, padding=0, dilation=1) -> tuple:
    """``(N, K, OH, OW)`` with ``O = (I + 2p - d (k - 1) - 1) // s + 1``."""
    sh, sw = _pair(stride, "stride")
    dh, dw = _pair(dilation, "dilation")
    ph, pw = _conv_padding(padding, weight_shape, (sh, sw), (dh, dw))
    n, _, h, w = input_shape
    k, _, r, s = weight_shape
    return (n, k, (h + 2 * ph - dh * (r - 1) - 1) // sh + 1, (w + 2 * pw - dw * (s - 1) - 1) // sw + 1)


def _check_geometry(st, pad, dil, stride, padding, dilation):
    if min(st) < 1:
        raise ValueError(f"stride: must be >= 1, got {stride!r}")
    if min(dil) < 1:
        raise ValueError(f"dilation: must be >= 1, got {dilation!r}")
    if min(pad) < 0:
        raise ValueError(f"padding: must be >= 0, got {padding!r}")


def _conv_geometry(input, weight, stride, padding, dilation, groups):
    xs, ws = _shape(input, "input"), _shape(weight, "weight")
    return _geometry_of(xs, ws, stride, padding, dilation, groups)


def _geometry_of(xs, ws, stride, padding, dilation, groups):
    if len(xs) != 4:
        raise ValueError(f"conv2d: expected a 4-D input [N, C, H, W], got shape {tuple(xs)}")
    if len(ws) != 4:
        raise ValueError(f"conv2d: expected a 4-D weight [out_channels, in_channels/groups, kH, kW], "
                         f"got shape {tuple(ws)}")
    if isinstance(groups, (bool, np.bool_)) or not isinstance(groups, (int, np.integer)):
        raise TypeError(f"groups: expected an int, got {groups!r}")
    st = _pair(stride, "stride")
    dil = _pair(dilation, "dilation")
    pad = _conv_padding(padding, ws, st, dil)
    _check_geometry(st, pad, dil, stride, padding, dilation)
    if groups < 1:
        raise ValueError(f"groups: must be >= 1, got {groups!r}")
    if xs[1] % groups or ws[0] % groups:
        raise ValueError(f"groups: in_channels ({xs[1]}) and out_channels ({ws[0]}) must be divisible by "
                         f"groups ({groups})")
    return tuple(xs), tuple(ws), st, pad, dil, int(groups)


def conv2d_paths(input_shape, weight_shape, stride=1, padding=0, dilation=1, groups=1, *, dtype="float32") -> dict:
    """The CPU algorithm family each pass of this convolution takes, on the selected ISA.

    ``{"forward": ..., "input_grad": ..., "weight_grad": ...}``, each one of ``"im2col"``
    (im2col bands + GEMM), ``"pointwise"`` (1x1, stride 1, unpadded: the GEMM on the image),
    ``"depthwise"``, ``"direct"`` (vectors along the output width) or ``"channel_vector"``
    (vectors along the output channels).  The answer comes from the same selection functions
    that :func:`conv2d` and :func:`conv2d_backward` run, so it depends on the ISA
    (``fusedlearn.set_isa``) and the dtype (float32 / float64 vector widths).
    """
    xs, ws = tuple(int(v) for v in input_shape), tuple(int(v) for v in weight_shape)
    xs, ws, st, pad, dil, groups = _geometry_of(xs, ws, stride, padding, dilation, groups)
    dt = np.dtype(dtype).name
    if dt not in ("float32", "float64"):
        raise TypeError(f"dtype: expected float32 or float64, got {dtype!r}")
    return _C.conv2d_paths(list(xs), list(ws), st, pad, dil, groups, dt)


def conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, *, activation=None, out=None):
    """``torch.nn.functional.conv2d`` (zero padding) with an optional fused activation."""
    xs, ws, st, pad, dil, groups = _conv_geometry(input, weight, stride, padding, dilation, groups)
    act = _act_name(activation)
    if out is None:
        n, k, oh, ow = conv2d_output_shape(xs, ws, st, pad, dil)
        out = _empty_like(input, (n, k, max(oh, 0), max(ow, 0)))
    _C.conv2d_forward(input, weight, bias, out, st, pad, dil, groups, act)
    return out


def conv2d_backward(grad_output, input, weight, stride=1, padding=0, dilation=1, groups=1, *, output=None,
                    activation=None, input_grad=True, weight_grad=True, bias_grad=True, grad_weight=None,
                    grad_bias=None, accumulate=False):
    """Gradients of :func:`conv2d`: ``(grad_input, grad_weight, grad_bias)`` (None where not asked for).

    With ``activation`` the gradient first goes through its derivative, computed
    from the forward ``output``.  ``grad_weight`` / ``grad_bias`` given: written
    (or, with ``accumulate``, added to) in place.
    """
    xs, ws, st, pad, dil, groups = _conv_geometry(input, weight, stride, padding, dilation, groups)
    act = _act_name(activation)
    if act and output is None:
        raise ValueError(f"conv2d_backward: activation={activation!r} needs the forward output")
    gx = _empty_like(input, xs) if input_grad else None
    if weight_grad and grad_weight is None:
        grad_weight, accumulate_w = _empty_like(input, ws), False
    else:
        accumulate_w = accumulate
    if bias_grad and grad_bias is None:
        grad_bias, accumulate_b = _empty_like(input, (ws[0],)), False
    else:
        accumulate_b = accumulate
    if not weight_grad:
        grad_weight = None
    if not bias_grad:
        grad_bias = None
    if accumulate_w == accumulate_b:
        _C.conv2d_backward(input, weight, grad_output, output, gx, grad_weight, grad_bias, st, pad, dil, groups,
                           act, accumulate_w)
    else:  # one freshly allocated, one accumulated: two calls (rare)
        _C.conv2d_backward(input, weight, grad_output, output, gx, grad_weight, None, st, pad, dil, groups, act,
                           accumulate_w)
        _C.conv2d_backward(input, weight, grad_output, output, None, None, grad_bias, st, pad, dil, groups, act,
                           accumulate_b)
    return gx, grad_weight, grad_bias


# ---- pooling ---------------------------------------------------------------------------------
def _pool_args(kernel_size, stride, padding, dilation=1):
    k = _pair(kernel_size, "kernel_size")
    s = k if stride is None or (isinstance(stride, (tuple, list)) and len(stride) == 0) else _pair(stride, "stride")
    return k, s, _pair(padding, "padding"), _pair(dilation, "dilation")


def _pool_out(n, k, s, p, d, ceil_mode):
    span = n + 2 * p - d * (k - 1) - 1
    o = (-(-span // s) if ceil_mode else span // s) + 1
    if ceil_mode and (o - 1) * s >= n + p:
        o -= 1
    return o


def _pooled_shape(xs, k, s, p, d, ceil_mode, who):
    if min(s) < 1 or min(k) < 1 or min(d) < 1:
        raise ValueError(f"{who}: kernel_size, stride and dilation must be >= 1, got kernel_size={k}, "
                         f"stride={s}, dilation={d}")
    if len(xs) not in (3, 4):
        raise ValueError(f"{who}: expected a 3-D [C, H, W] or 4-D [N, C, H, W] input, got shape {tuple(xs)}")
    oh = _pool_out(xs[-2], k[0], s[0], p[0], d[0], ceil_mode)
    ow = _pool_out(xs[-1], k[1], s[1], p[1], d[1], ceil_mode)
    return (*xs[:-2], max(oh, 0), max(ow, 0))


def _index_view(idx):
    """The int64 buffer the kernel writes: numpy itself, or a CPU torch tensor's numpy view."""
    return idx.numpy() if _is_torch(idx) else idx


def max_pool2d(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False):
    """``torch.nn.functional.max_pool2d``; ``return_indices`` gives ``(out, indices)`` (int64, flat h*W+w).

    On CUDA no indices are kept (the backward recomputes the argmax from the input)."""
    k, s, p, d = _pool_args(kernel_size, stride, padding, dilation)
    xs = tuple(_shape(input, "input"))
    out_shape = _pooled_shape(xs, k, s, p, d, ceil_mode, "max_pool2d")
    out = _empty_like(input, out_shape)
    cuda = _is_torch(input) and input.device.type != "cpu"
    if cuda:
        idx = None
    elif _is_torch(input):
        import torch

        idx = torch.empty(out_shape, dtype=torch.int64)
    else:
        idx = np.empty(out_shape, np.int64)
    _C.max_pool2d_forward(input, out, None if idx is None else _index_view(idx), k, s, p, d, bool(ceil_mode))
    return (out, idx) if return_indices else out


def max_pool2d_backward(grad_output, indices, input_shape, kernel_size, stride=None, padding=0, dilation=1,
                        ceil_mode=False, *, input=None):
    """Input gradient of :func:`max_pool2d`: ``grad_output`` scattered to ``indices``.
    (CUDA: pass ``indices=None`` and the forward ``input``.)"""
    k, s, p, d = _pool_args(kernel_size, stride, padding, dilation)
    gx = _empty_like(grad_output, tuple(input_shape))
    _C.max_pool2d_backward(grad_output, None if indices is None else _index_view(indices), gx, input, k, s, p, d,
                           bool(ceil_mode))
    return gx


def _divisor(divisor_override):
    if divisor_override is None:
        return 0
    if int(divisor_override) <= 0:
        raise ValueError(f"divisor_override: must be a positive int, got {divisor_override!r}")
    return int(divisor_override)


def avg_pool2d(input, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
               divisor_override=None):
    """``torch.nn.functional.avg_pool2d`` (same divisor rules, including ``count_include_pad``)."""
    k, s, p, _ = _pool_args(kernel_size, stride, padding)
    out = _empty_like(input, _pooled_shape(tuple(_shape(input, "input")), k, s, p, (1, 1), ceil_mode, "avg_pool2d"))
    _C.avg_pool2d_forward(input, out, k, s, p, bool(ceil_mode), bool(count_include_pad), _divisor(divisor_override))
    return out


def avg_pool2d_backward(grad_output, input_shape, kernel_size, stride=None, padding=0, ceil_mode=False,
                        count_include_pad=True, divisor_override=None):
    k, s, p, _ = _pool_args(kernel_size, stride, padding)
    gx = _empty_like(grad_output, tuple(input_shape))
    _C.avg_pool2d_backward(grad_output, gx, k, s, p, bool(ceil_mode), bool(count_include_pad),
                           _divisor(divisor_override))
    return gx


def _adaptive_kernel(input_shape, output_size):
    if len(input_shape) not in (3, 4):
        raise ValueError(f"adaptive_avg_pool2d: expected a 3-D or 4-D input, got shape {tuple(input_shape)}")
    h, w = input_shape[-2:]
    if output_size is None:
        raise TypeError("adaptive_avg_pool2d: output_size must be an int or a pair")
    oh, ow = (output_size, output_size) if isinstance(output_size, (int, np.integer)) else tuple(output_size)
    oh, ow = (h if oh is None else int(oh)), (w if ow is None else int(ow))
    if oh <= 0 or ow <= 0 or h % oh or w % ow:
        raise ValueError(f"adaptive_avg_pool2d: output size ({oh}, {ow}) must divide the input size ({h}, {w}) "
                         "(only equal windows are implemented; 1 = global average pooling)")
    return (h // oh, w // ow)


def adaptive_avg_pool2d(input, output_size):
    """``torch.nn.functional.adaptive_avg_pool2d`` for output sizes dividing the input (1: global average)."""
    k = _adaptive_kernel(tuple(_shape(input, "input")), output_size)
    return avg_pool2d(input, k, k)


def adaptive_avg_pool2d_backward(grad_output, input_shape, output_size):
    k = _adaptive_kernel(tuple(input_shape), output_size)
    return avg_pool2d_backward(grad_output, input_shape, k, k)


# ---- batch norm --------------------------------------------------------------------------------
def batch_norm(input, running_mean, running_var, weight=None, bias=None, training=False, momentum=0.1, eps=1e-5,
               *, activation=None, return_stats=False):
    """``torch.nn.functional.batch_norm`` over dimension 1, with an optional fused ReLU.

    ``return_stats``: also return ``(save_mean, save_invstd)`` (the batch mean and
    ``1 / sqrt(var + eps)`` in training; None in evaluation), which
    :func:`batch_norm_backward` takes.
    """
    act = _act_name(activation, (None, "identity", "relu"))
    if momentum is None:
        raise ValueError("batch_norm: momentum must be a number here (BatchNorm2d resolves momentum=None "
                         "to the cumulative average factor 1/num_batches_tracked)")
    xs = tuple(_shape(input, "input"))
    out = _empty_like(input, xs)
    sm = si = None
    if training:
        c = xs[1] if len(xs) >= 2 else 0
        sm, si = _empty_like(input, (c,)), _empty_like(input, (c,))
    _C.batch_norm_forward(input, out, weight, bias, running_mean, running_var, sm, si, bool(training),
                          float(momentum), float(eps), act)
    return (out, sm, si) if return_stats else out


def batch_norm_backward(grad_output, input, weight=None, save_mean=None, save_invstd=None, running_mean=None,
                        running_var=None, training=True, eps=1e-5, *, output=None, activation=None, input_grad=True,
                        grad_weight=None, grad_bias=None, accumulate=False):
    """Gradients of :func:`batch_norm`: ``(grad_input, grad_weight, grad_bias)``.

    Training uses the batch statistics saved by the forward (``save_mean``,
    ``save_invstd``), evaluation the running ones.  ``grad_weight`` /
    ``grad_bias``: allocated when None and ``weight`` is given, else written (or
    with ``accumulate`` added to) in place.
    """
    act = _act_name(activation, (None, "identity", "relu"))
    if act and output is None:
        raise ValueError("batch_norm_backward: activation='relu' needs the forward output")
    xs = tuple(_shape(input, "input"))
    c = xs[1] if len(xs) >= 2 else 0
    gx = _empty_like(input, xs) if input_grad else None
    accumulate_now = bool(accumulate)
    if weight is None:  # no affine parameters: no parameter gradients
        grad_weight = grad_bias = None
    elif (grad_weight is None) != (grad_bias is None):
        raise ValueError("batch_norm_backward: pass both grad_weight and grad_bias, or neither")
    elif grad_weight is None:
        grad_weight, grad_bias, accumulate_now = _empty_like(input, (c,)), _empty_like(input, (c,)), False
    _C.batch_norm_backward(input, output, grad_output, weight, running_mean, running_var, save_mean, save_invstd, gx,
                           grad_weight, grad_bias, bool(training), float(eps), act, bool(accumulate_now))
    return gx, grad_weight, grad_bias
