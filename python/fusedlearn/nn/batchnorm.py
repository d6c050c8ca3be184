"""``BatchNorm2d`` (torch's names, buffers, momentum semantics) with an optional fused ReLU."""
from __future__ import annotations

import numpy as np

from .. import functional as F
from .module import Module, as_float_input
from .parameter import Parameter


class BatchNorm2d(Module):
    """``torch.nn.BatchNorm2d(num_features, eps=1e-5, momentum=0.1, affine=True, track_running_stats=True)``.

    Training normalises with the batch's biased variance and updates
    ``running_mean`` / ``running_var`` (the latter with the unbiased variance)
    as ``(1 - momentum) * running + momentum * batch``; ``momentum=None`` uses
    the cumulative average ``1 / num_batches_tracked``.  Evaluation uses the
    running statistics (or batch statistics when ``track_running_stats=False``).
    State dict: ``weight``, ``bias``, ``running_mean``, ``running_var``,
    ``num_batches_tracked`` as torch.  ``activation='relu'`` fuses a ReLU into
    the same pass (``BatchNorm2d`` then ``ReLU`` without the extra memory pass).
    """

    def __init__(self, num_features: int, eps: float = 1e-5, momentum=0.1, affine: bool = True,
                 track_running_stats: bool = True, device=None, dtype=None, *, activation=None) -> None:
        super().__init__()
        if int(num_features) <= 0:
            raise ValueError(f"BatchNorm2d: num_features must be positive, got {num_features}")
        if activation not in (None, "relu"):
            raise ValueError(f"BatchNorm2d: activation must be None or 'relu', got {activation!r}")
        if device is not None and str(getattr(device, "type", device)).split(":")[0] != "cpu":
            raise ValueError(f"BatchNorm2d: modules run on the CPU only for now, got device={device!r}")
        dtype = np.dtype(np.float32 if dtype is None else dtype)
        if dtype.kind != "f":
            raise TypeError(f"BatchNorm2d: dtype must be floating-point, got {dtype}")
        self.num_features = int(num_features)
        self.eps = float(eps)
        self.momentum = momentum
        self.affine = bool(affine)
        self.track_running_stats = bool(track_running_stats)
        self.activation = activation
        if self.affine:
            self.weight = Parameter(np.ones(self.num_features, dtype))
            self.bias = Parameter(np.zeros(self.num_features, dtype))
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)
        if self.track_running_stats:
            self.register_buffer("running_mean", np.zeros(self.num_features, dtype))
            self.register_buffer("running_var", np.ones(self.num_features, dtype))
            self.register_buffer("num_batches_tracked", np.array(0, dtype=np.int64))
        else:
            self.register_buffer("running_mean", None)
            self.register_buffer("running_var", None)
            self.register_buffer("num_batches_tracked", None)
        self._cache = None

    def reset_running_stats(self) -> None:
        if self.track_running_stats:
            self.running_mean[...] = 0
            self.running_var[...] = 1
            self.num_batches_tracked[...] = 0

    def reset_parameters(self) -> None:
        self.reset_running_stats()
        if self.affine:
            self.weight.data[...] = 1
            self.bias.data[...] = 0

    def extra_repr(self) -> str:
        act = f", activation={self.activation!r}" if self.activation else ""
        return (f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, affine={self.affine}, "
                f"track_running_stats={self.track_running_stats}{act}")

    def forward(self, x):
        x = as_float_input(x, type(self).__name__)
        if x.ndim != 4:
            raise ValueError(f"expected 4D input (got {x.ndim}D input)")
        if x.shape[1] != self.num_features:
            raise ValueError(f"BatchNorm2d: expected {self.num_features} channels, got input of shape {x.shape}")
        dtype = self.weight.data.dtype if self.affine else (
            self.running_mean.dtype if self.track_running_stats else x.dtype)
        x = np.ascontiguousarray(x, dtype=dtype)
        factor = 0.0 if self.momentum is None else float(self.momentum)
        if self.training and self.track_running_stats:
            self.num_batches_tracked += 1
            if self.momentum is None:
                factor = 1.0 / float(self.num_batches_tracked)
        use_batch = self.training or not self.track_running_stats
        rm = self.running_mean if (not self.training or self.track_running_stats) else None
        rv = self.running_var if rm is not None else None
        w = self.weight.data if self.affine else None
        b = self.bias.data if self.affine else None
        y, sm, si = F.batch_norm(x, rm, rv, w, b, use_batch, factor, self.eps, activation=self.activation,
                                 return_stats=True)
        self._cache = (x, y, sm, si, use_batch)
        return y

    def backward(self, grad_out):
        if self._cache is None:
            raise RuntimeError(f"{type(self).__name__}: backward() called before forward()")
        x, y, sm, si, use_batch = self._cache
        g = np.asarray(grad_out)
        if g.shape != y.shape:
            raise ValueError(f"{type(self).__name__}.backward: grad_out has shape {g.shape}, the output had {y.shape}")
        g = np.ascontiguousarray(g, dtype=y.dtype)
        w = self.weight.data if self.affine else None
        acc = self.affine and self.weight.grad is not None and self.bias.grad is not None
        gx, gw, gb = F.batch_norm_backward(
            g, x, w, sm, si, self.running_mean, self.running_var, use_batch, self.eps, output=y,
            activation=self.activation, grad_weight=self.weight.grad if acc else None,
            grad_bias=self.bias.grad if acc else None, accumulate=acc)
        if self.affine:
            self.weight.grad, self.bias.grad = gw, gb
        return gx
