"""Data-parallel training over MPI (mpi4py), with a size-1 local communicator when not under MPI.

    comm = fld.init()                     # MPI under mpiexec, LocalComm otherwise
    model = fld.DataParallel(model)       # broadcasts rank 0's parameters and buffers
    fl.train.fit(model, ...)              # batch_size is the global batch; each rank takes its share

Gradients live in per-dtype buckets (the first one small, the rest ``bucket_cap_mb``); each
``Parameter.grad`` is a view into its bucket, and each bucket is reduced in place (``Allreduce``
with ``IN_PLACE`` on the numpy buffer, nothing pickled).  Each rank's local-mean gradient is
scaled by ``n_local / n_global`` first, so after ``backward`` every ``.grad`` is the gradient of
the global batch, identical on every rank.
"""
from __future__ import annotations

import contextlib
import os
import sys
import traceback

import numpy as np

__all__ = ["init", "get_comm", "LocalComm", "MPIComm", "DataParallel", "share", "shares",
           "StructureMismatchError", "FIRST_BUCKET_MB"]

FIRST_BUCKET_MB = 1.0
_COMM = None
_MPI_ENV = ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK", "MPI_LOCALNRANKS")


class StructureMismatchError(RuntimeError, ValueError):
    """The wrapped models differ across ranks (parameter names, shapes or dtypes)."""


class LocalComm:
    """A size-1 communicator: every collective is the identity, so all code paths run without MPI."""

    rank, size, local_size = 0, 1, 1
    is_mpi = False

    def allreduce_(self, buf: np.ndarray) -> np.ndarray:
        return buf

    def bcast_(self, buf: np.ndarray, root: int = 0) -> np.ndarray:
        return buf

    def allgather(self, obj) -> list:
        return [obj]

    def barrier(self) -> None:
        pass

    def abort(self, code: int = 1) -> None:
        os._exit(code)


class MPIComm:
    """mpi4py's communicator behind the same small interface (buffers in place, never pickled)."""

    is_mpi = True

    def __init__(self, comm) -> None:
        from mpi4py import MPI
        self.MPI, self.comm = MPI, comm
        self.rank, self.size = comm.Get_rank(), comm.Get_size()
        local = comm.Split_type(MPI.COMM_TYPE_SHARED)
        self.local_size = local.Get_size()
        local.Free()

    def allreduce_(self, buf: np.ndarray) -> np.ndarray:
        if not buf.flags.c_contiguous:
            raise ValueError("allreduce_: buffer must be C-contiguous")
        if buf.size:
            self.comm.Allreduce(self.MPI.IN_PLACE, buf, op=self.MPI.SUM)
        return buf

    def bcast_(self, buf: np.ndarray, root: int = 0) -> np.ndarray:
        if buf.size:
            self.comm.Bcast(buf, root=root)
        return buf

    def allgather(self, obj) -> list:
        return self.comm.allgather(obj)

    def barrier(self) -> None:
        self.comm.Barrier()

    def abort(self, code: int = 1) -> None:
        self.comm.Abort(code)


def _under_mpi() -> bool:
    return any(k in os.environ for k in _MPI_ENV)


def _threads_per_rank(local_size: int) -> int:
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    return max(1, cores // max(1, local_size))


def _install_abort_hook(comm) -> None:
    prev = sys.excepthook

    def hook(etype, value, tb):
        try:
            sys.stderr.write(f"[rank {comm.rank}] uncaught exception, aborting the MPI job:\n")
            traceback.print_exception(etype, value, tb)
            sys.stderr.flush()
        finally:
            comm.abort(1)
        prev(etype, value, tb)  # pragma: no cover - Abort does not return

    sys.excepthook = hook


def init(backend: str = "auto", threads: int | None = None) -> "LocalComm | MPIComm":
    """The communicator of this process: MPI's world under ``mpiexec`` (``backend="auto"``/``"mpi"``),
    else a :class:`LocalComm`.  Under MPI it installs an excepthook that aborts the whole job on an
    uncaught exception (no hang), and gives each rank its share of the cores (CPU affinity divided
    by the ranks on this machine) unless ``threads`` is given or ``OMP_NUM_THREADS`` /
    ``FUSEDLEARN_NUM_THREADS`` is set.  Calling it again returns the same communicator."""
    global _COMM
    if _COMM is not None:
        return _COMM
    if backend not in ("auto", "mpi", "local"):
        raise ValueError(f"init: backend must be 'auto', 'mpi' or 'local', got {backend!r}")
    if backend == "local" or (backend == "auto" and not _under_mpi()):
        _COMM = LocalComm()
    else:
        try:
            import mpi4py
        except ImportError as exc:
            raise ImportError("fusedlearn.distributed: MPI needs mpi4py: pip install 'fusedlearn[mpi]'") from exc
        mpi4py.rc.thread_level = "funneled"
        from mpi4py import MPI
        _COMM = MPIComm(MPI.COMM_WORLD)
        if _COMM.size > 1:
            _install_abort_hook(_COMM)
    if threads is None and _COMM.size > 1 and not (os.environ.get("OMP_NUM_THREADS")
                                                   or os.environ.get("FUSEDLEARN_NUM_THREADS")):
        threads = _threads_per_rank(_COMM.local_size)
    if threads is not None:
        from . import set_num_threads
        set_num_threads(int(threads))
    return _COMM


def get_comm():
    """The communicator :func:`init` made (calling it if needed)."""
    return init() if _COMM is None else _COMM


def shares(n: int, size: int) -> list:
    """Rows of each rank in a batch of ``n``: they differ by at most one (the first ``n % size``
    ranks take one more); a rank may get zero rows."""
    n, size = int(n), int(size)
    if n < 0 or size < 1:
        raise ValueError(f"shares: need n >= 0 and size >= 1, got n={n}, size={size}")
    q, r = divmod(n, size)
    return [q + (i < r) for i in range(size)]


def share(n: int, rank: int, size: int) -> slice:
    """The rows ``[start, stop)`` of rank ``rank`` in a batch of ``n``."""
    if not 0 <= rank < size:
        raise ValueError(f"share: rank {rank} not in [0, {size})")
    s = shares(n, size)
    start = sum(s[:rank])
    return slice(start, start + s[rank])


class _Bucket:
    def __init__(self, dtype, params) -> None:
        self.dtype = np.dtype(dtype)
        self.params = params
        total = sum(p.size for p in params)
        self.buffer = np.zeros(total, dtype=self.dtype)
        self.views, off = [], 0
        for p in params:
            self.views.append(self.buffer[off:off + p.size].reshape(p.shape))
            off += p.size


def make_buckets(params, bucket_cap_mb: float = 25.0, first_bucket_mb: float = FIRST_BUCKET_MB) -> list:
    """Per-dtype buckets of ``params`` in reverse order (the order backward produces gradients):
    the first bucket of each dtype holds up to ``first_bucket_mb`` MiB, the rest ``bucket_cap_mb``
    (a parameter bigger than the cap gets a bucket of its own)."""
    if bucket_cap_mb <= 0:
        raise ValueError(f"bucket_cap_mb must be > 0, got {bucket_cap_mb}")
    by_dtype: dict = {}
    for p in reversed(list(params)):
        by_dtype.setdefault(p.dtype, []).append(p)
    buckets = []
    for dtype, ps in by_dtype.items():
        cap = min(first_bucket_mb, bucket_cap_mb) * 2 ** 20
        cur, nbytes = [], 0
        for p in ps:
            if cur and nbytes + p.data.nbytes > cap:
                buckets.append(_Bucket(dtype, cur))
                cur, nbytes, cap = [], 0, bucket_cap_mb * 2 ** 20
            cur.append(p)
            nbytes += p.data.nbytes
        if cur:
            buckets.append(_Bucket(dtype, cur))
    return buckets


class DataParallel:
    """Wraps a module for data-parallel training on ``comm`` (default :func:`get_comm`).

    At wrap: a structure check across ranks (names, shapes, dtypes of parameters and buffers:
    :class:`StructureMismatchError` on every rank, not a hang), then rank 0's parameters and
    buffers are broadcast.  ``backward(grad)`` runs the module's backward, then scales the local
    gradients by ``n_local / n_global`` (the rows seen in ``forward``; ``fit`` sets the global
    count, else it is all-reduced) and all-reduces every bucket in place, unless inside
    :meth:`no_sync`.  Other attributes are the module's.
    """

    def __init__(self, module, bucket_cap_mb: float = 25.0, comm=None, first_bucket_mb: float = FIRST_BUCKET_MB):
        object.__setattr__(self, "module", module)
        object.__setattr__(self, "comm", get_comm() if comm is None else comm)
        object.__setattr__(self, "_sync", True)
        object.__setattr__(self, "_n_local", 0)
        object.__setattr__(self, "_n_global", None)
        object.__setattr__(self, "_grad_scale", "mean")
        self._check_structure()
        self._broadcast_state()
        params = [p for p in module.parameters() if p.requires_grad]
        object.__setattr__(self, "buckets", make_buckets(params, bucket_cap_mb, first_bucket_mb))

    def __getattr__(self, name):
        return getattr(self.__dict__["module"], name)

    # ---- wrap-time checks --------------------------------------------------------------
    def _check_structure(self) -> None:
        sig = [(k, tuple(np.shape(v)), str(np.asarray(v).dtype)) for k, v in self.module.state_dict().items()]
        sigs = self.comm.allgather(sig)
        ref = sigs[0]
        for r, s in enumerate(sigs):
            if s == ref:
                continue
            detail = "different number of entries"
            names0, names_r = [x[0] for x in ref], [x[0] for x in s]
            if names0 != names_r:
                only0 = [n for n in names0 if n not in names_r]
                only_r = [n for n in names_r if n not in names0]
                detail = f"names differ (only on rank 0: {only0[:5]}, only on rank {r}: {only_r[:5]})"
            else:
                for (n, shp, dt), (_, shp_r, dt_r) in zip(ref, s):
                    if (shp, dt) != (shp_r, dt_r):
                        detail = f"{n!r}: rank 0 has {shp} {dt}, rank {r} has {shp_r} {dt_r}"
                        break
            raise StructureMismatchError(f"DataParallel: the model on rank {r} differs from rank 0's: {detail}")

    def _broadcast_state(self) -> None:
        for _, v in self.module.state_dict().items():
            arr = v if isinstance(v, np.ndarray) else np.asarray(v)
            if arr.flags.c_contiguous:
                self.comm.bcast_(arr)
            else:  # pragma: no cover - state arrays are contiguous
                tmp = np.ascontiguousarray(arr)
                self.comm.bcast_(tmp)
                np.copyto(arr, tmp)

    # ---- computation -------------------------------------------------------------------
    def forward(self, x, *args, **kwargs):
        object.__setattr__(self, "_n_local", int(np.shape(x)[0]))
        return self.module(x, *args, **kwargs)

    __call__ = forward

    def _attach_views(self) -> None:
        """Point every ``.grad`` at its bucket view (zeroed where it was None)."""
        for b in self.buckets:
            for p, v in zip(b.params, b.views):
                if p.grad is None:
                    v.fill(0)
                    p.grad = v
                elif p.grad is not v:
                    np.copyto(v, p.grad)
                    p.grad = v

    def backward(self, grad_out):
        self._attach_views()
        out = self.module.backward(grad_out)
        self._after_backward()
        return out

    def backward_params(self, grad_out) -> None:
        self._attach_views()
        getattr(self.module, "backward_params", self.module.backward)(grad_out)
        self._after_backward()

    def backward_empty(self) -> None:
        """Join the reduction with zero local rows (a rank whose share of the batch is empty)."""
        object.__setattr__(self, "_n_local", 0)
        self._attach_views()
        self._after_backward()

    def _after_backward(self) -> None:
        self._attach_views()  # layers that assigned a fresh array: copy it into the bucket
        if not self._sync:
            return
        self.reduce_gradients()

    def _global_rows(self) -> int:
        if self._n_global is not None:
            return self._n_global
        cnt = np.array([self._n_local], dtype=np.float64)
        self.comm.allreduce_(cnt)
        return int(cnt[0])

    def reduce_gradients(self) -> None:
        """Scale the local gradients and all-reduce every bucket in place."""
        n_global = self._global_rows()
        if self._grad_scale == "mean":
            w = self._n_local / n_global if n_global else 0.0
        else:
            w = 1.0
        for b in self.buckets:
            if w != 1.0:
                b.buffer *= b.dtype.type(w)
            self.comm.allreduce_(b.buffer)
        object.__setattr__(self, "_n_global", None)

    def set_batch(self, n_local: int, n_global: int, grad_scale: str = "mean") -> None:
        """Tell the next backward the local and global rows of the batch (``fit`` does)."""
        if grad_scale not in ("mean", "sum"):
            raise ValueError(f"grad_scale must be 'mean' or 'sum', got {grad_scale!r}")
        object.__setattr__(self, "_n_local", int(n_local))
        object.__setattr__(self, "_n_global", int(n_global))
        object.__setattr__(self, "_grad_scale", grad_scale)

    @contextlib.contextmanager
    def no_sync(self):
        """Accumulate local gradients without reducing (the backward after the block reduces).

        The scale of each backward is then ``n_local / n_global`` of that batch, so for equal
        batches the sum over the accumulated steps is what one large batch would give times the
        number of steps divided by one; use ``set_batch`` with the accumulated counts for exact
        large-batch equivalence (see the tests)."""
        old = self._sync
        object.__setattr__(self, "_sync", False)
        try:
            yield
        finally:
            object.__setattr__(self, "_sync", old)

    def reduce_metrics(self, *values: float) -> np.ndarray:
        """Sum ``values`` over the ranks as float64 (for exact (sum, count) metrics)."""
        buf = np.array(values, dtype=np.float64)
        return self.comm.allreduce_(buf)

    def train(self, mode: bool = True):
        self.module.train(mode)
        return self

    def eval(self):
        return self.train(False)

    def parameters(self, recurse: bool = True):
        return self.module.parameters(recurse)

    def named_parameters(self, *a, **k):
        return self.module.named_parameters(*a, **k)

    def state_dict(self, *a, **k):
        return self.module.state_dict(*a, **k)

    def load_state_dict(self, *a, **k):
        return self.module.load_state_dict(*a, **k)

    def __repr__(self) -> str:
        return f"DataParallel(rank={self.comm.rank}, size={self.comm.size}, buckets={len(self.buckets)})"
