"""``SyncBatchNorm2d``: BatchNorm2d whose training statistics are those of the global batch.

Forward: each rank sums ``(x, x*x)`` per channel in float64 and counts its rows; one all-reduce of
``(sum, sumsq, rows)`` gives the count-weighted mean and biased variance of the concatenation of
every rank's share, which the BatchNorm kernel then applies (its evaluation path, fed these
statistics).  Backward: one all-reduce of the two per-channel sums ``sum(g)`` and
``sum(g * xhat)``, each rank's weighted by its share ``n_local / n_global`` (the scale of its
upstream gradient under ``DataParallel``'s mean convention, see docs/math/data_parallel.md).
A rank with no rows joins both all-reduces through :meth:`join_empty_forward` /
:meth:`join_empty_backward` (``fit`` calls them), so it never hangs the others.
"""
from __future__ import annotations

import numpy as np

from .. import functional as F
from .batchnorm import BatchNorm2d
from .module import as_float_input


class SyncBatchNorm2d(BatchNorm2d):
    """``BatchNorm2d`` with the statistics of the global batch over ``comm`` (default
    ``fusedlearn.distributed.get_comm()``); evaluation uses the running statistics as
    ``BatchNorm2d``.  ``grad_scale="sum"`` when the loss is sum-reduced (upstream gradients are
    then on the global scale on every rank)."""

    def __init__(self, num_features: int, eps: float = 1e-5, momentum=0.1, affine: bool = True,
                 track_running_stats: bool = True, device=None, dtype=None, *, activation=None, comm=None,
                 grad_scale: str = "mean") -> None:
        super().__init__(num_features, eps, momentum, affine, track_running_stats, device, dtype,
                         activation=activation)
        if grad_scale not in ("mean", "sum"):
            raise ValueError(f"SyncBatchNorm2d: grad_scale must be 'mean' or 'sum', got {grad_scale!r}")
        self.comm = comm
        self.grad_scale = grad_scale
        self._sync_cache = None

    def _comm(self):
        if self.comm is None:
            from ..distributed import get_comm
            self.comm = get_comm()
        return self.comm

    def _dtype(self, x_dtype):
        return self.weight.data.dtype if self.affine else (
            self.running_mean.dtype if self.track_running_stats else x_dtype)

    def _global_stats(self, s, ss, rows, hw):
        c = self.num_features
        buf = np.concatenate([s, ss, [float(rows) * hw, float(rows)]]).astype(np.float64)
        self._comm().allreduce_(buf)
        cnt, n_rows = buf[-2], buf[-1]
        mean = buf[:c] / cnt
        var = np.maximum(buf[c:2 * c] / cnt - mean * mean, 0.0)
        if self.track_running_stats:
            self.num_batches_tracked += 1
            f = (1.0 / float(self.num_batches_tracked)) if self.momentum is None else float(self.momentum)
            unbiased = var * (cnt / (cnt - 1)) if cnt > 1 else var
            self.running_mean[...] = (1 - f) * self.running_mean + f * mean
            self.running_var[...] = (1 - f) * self.running_var + f * unbiased
        return mean, var, n_rows

    def forward(self, x):
        if not self.training:
            return super().forward(x)
        x = as_float_input(x, type(self).__name__)
        if x.ndim != 4 or x.shape[1] != self.num_features:
            raise ValueError(f"SyncBatchNorm2d: expected input [N, {self.num_features}, H, W], got {x.shape}")
        x = np.ascontiguousarray(x, dtype=self._dtype(x.dtype))
        x64 = x.astype(np.float64)
        hw = x.shape[2] * x.shape[3]
        mean, var, n_rows = self._global_stats(x64.sum((0, 2, 3)), (x64 * x64).sum((0, 2, 3)), x.shape[0], hw)
        dt = x.dtype
        w = self.weight.data if self.affine else None
        b = self.bias.data if self.affine else None
        # the kernel's evaluation path normalises with the statistics it is given
        y = F.batch_norm(x, mean.astype(dt), var.astype(dt), w, b, False, 0.0, self.eps, activation=self.activation)
        self._sync_cache = (x64, y, mean, var, n_rows, x.shape[0], hw)
        return y

    def join_empty_forward(self) -> None:
        """This rank has no rows: take part in the forward all-reduce (and the running update)."""
        z = np.zeros(self.num_features)
        self._global_stats(z, z, 0, 0)

    def _weight(self, n_local, n_rows):
        return (n_local / n_rows if n_rows else 0.0) if self.grad_scale == "mean" else 1.0

    def backward(self, grad_out):
        if not self.training:
            return super().backward(grad_out)
        if self._sync_cache is None:
            raise RuntimeError("SyncBatchNorm2d: backward() called before forward()")
        x64, y, mean, var, n_rows, n_local, hw = self._sync_cache
        g = np.asarray(grad_out, dtype=np.float64)
        if g.shape != y.shape:
            raise ValueError(f"SyncBatchNorm2d.backward: grad_out has shape {g.shape}, the output had {y.shape}")
        if self.activation == "relu":
            g = g * (y > 0)
        shp = (1, -1, 1, 1)
        invstd = 1.0 / np.sqrt(var + self.eps)
        xhat = (x64 - mean.reshape(shp)) * invstd.reshape(shp)
        s1, s2 = g.sum((0, 2, 3)), (g * xhat).sum((0, 2, 3))
        wr = self._weight(n_local, n_rows)
        tot = np.concatenate([wr * s1, wr * s2])
        self._comm().allreduce_(tot)
        c = self.num_features
        S1, S2 = tot[:c], tot[c:]
        cnt = n_rows * hw
        scale = invstd * (self.weight.data.astype(np.float64) if self.affine else 1.0)
        gx = scale.reshape(shp) * (g - (S1.reshape(shp) + xhat * S2.reshape(shp)) / (cnt * wr))
        if self.affine:
            for p, v in ((self.weight, s2), (self.bias, s1)):
                if p.grad is None:
                    p.grad = v.astype(p.data.dtype)
                else:
                    p.grad += v.astype(p.data.dtype)
        return gx.astype(y.dtype)

    def join_empty_backward(self) -> None:
        """This rank has no rows: take part in the backward all-reduce with zero sums."""
        self._comm().allreduce_(np.zeros(2 * self.num_features))

    @classmethod
    def convert(cls, module, comm=None):
        """``module`` with every ``BatchNorm2d`` replaced by a ``SyncBatchNorm2d`` holding the same
        parameters and buffers (as ``torch.nn.SyncBatchNorm.convert_sync_batchnorm``)."""
        if isinstance(module, BatchNorm2d) and not isinstance(module, cls):
            dtype = module.weight.data.dtype if module.affine else (
                module.running_mean.dtype if module.track_running_stats else None)
            new = cls(module.num_features, module.eps, module.momentum, module.affine, module.track_running_stats,
                      dtype=dtype, activation=module.activation, comm=comm)
            new.load_state_dict({k: np.array(v, copy=True) for k, v in module.state_dict().items()})
            new.train(module.training)
            return new
        for name, child in list(module._modules.items()):
            if child is not None:
                module._modules[name] = cls.convert(child, comm)
        return module


def sync_batchnorm_layers(model) -> list:
    """The ``SyncBatchNorm2d`` layers of ``model`` in forward (registration) order."""
    root = getattr(model, "module", model)
    return [m for _, m in root.named_modules() if isinstance(m, SyncBatchNorm2d)]
