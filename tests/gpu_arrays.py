"""GPU arrays for the CUDA tests: PyTorch CUDA tensors when torch has CUDA,
else CuPy arrays.  `backend()` returns None when neither is usable."""
import numpy as np


class _Torch:
    name = "torch"

    def __init__(self, torch):
        self.torch = torch

    def _empty(self, shape, dtype, device=0, fill=None):
        t = self.torch
        kw = dict(dtype=getattr(t, np.dtype(dtype).name), device=f"cuda:{device}")
        return t.empty(shape, **kw) if fill is None else t.full(shape, fill, **kw)

    def to_dev(self, a, offset=0, device=0):
        """A CUDA copy of `a`, starting `offset` elements into a fresh buffer
        (offset 1..3 makes a contiguous array that is not 16-byte aligned)."""
        view = self._empty(a.size + offset, a.dtype, device)[offset:offset + a.size]
        view.copy_(self.torch.from_numpy(np.ascontiguousarray(a).ravel()))
        return view

    def vector(self, v, off=0):
        return self.to_dev(v, off)

    def strided(self, a, pad=0, col_off=0):
        """A CUDA view holding `a` whose rows are `pad` elements longer than
        the row (leading dimension cols + pad) and that starts `col_off`
        elements into its row: a strided sub-matrix of a larger array."""
        r, c = a.shape
        view = self._empty((r, c + pad + col_off), a.dtype, fill=float("nan"))[:, col_off:col_off + c]
        view.copy_(self.torch.from_numpy(np.ascontiguousarray(a)))
        return view

    def to_np(self, x):
        return x.detach().cpu().numpy()

    def sync(self):
        self.torch.cuda.synchronize()

    def ref_matmul(self, a, b):
        """float64 a @ b on the GPU (a, b numpy, already transposed)."""
        t = self.torch
        ad = t.from_numpy(np.ascontiguousarray(a, dtype=np.float64)).cuda()
        bd = t.from_numpy(np.ascontiguousarray(b, dtype=np.float64)).cuda()
        return t.matmul(ad, bd).cpu().numpy()


class _Cupy:
    name = "cupy"

    def __init__(self, cp):
        self.cp = cp

    def to_dev(self, a, offset=0, device=0):
        cp = self.cp
        with cp.cuda.Device(device):
            view = cp.empty(a.size + offset, dtype=a.dtype)[offset:offset + a.size]
            view[...] = cp.asarray(np.ascontiguousarray(a).ravel())
        return view

    def vector(self, v, off=0):
        return self.to_dev(v, off)

    def strided(self, a, pad=0, col_off=0):
        cp = self.cp
        r, c = a.shape
        view = cp.full((r, c + pad + col_off), np.nan, dtype=a.dtype)[:, col_off:col_off + c]
        view[...] = cp.asarray(np.ascontiguousarray(a))
        return view

    def to_np(self, x):
        return self.cp.asnumpy(x)

    def sync(self):
        self.cp.cuda.runtime.deviceSynchronize()

    def ref_matmul(self, a, b):
        return np.asarray(a, dtype=np.float64) @ np.asarray(b, dtype=np.float64)


def backend():
    try:
        import torch
        if torch.cuda.is_available():
            return _Torch(torch)
    except ImportError:
        pass
    try:
        import cupy
        return _Cupy(cupy)
    except ImportError:
        return None
