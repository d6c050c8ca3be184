"""Data-parallel training over MPI (mpi4py), with a size-1 local communicator when not under MPI.

    comm = fld.init()                     # MPI under mpiexec, LocalComm otherwise
    model = fld.DataParallel(model)       # broadcasts rank 0's parameters and buffers
    fl.train.fit(model, ...)              # batch_size is the global batch; each rank takes its share

Gradients live in per-dtype buckets (the first one small, the rest ``bucket_cap_mb``); each
``Parameter.grad`` is a view into its bucket, and each bucket is reduced in place (``Allreduce``
with ``IN_PLACE`` on the numpy buffer, nothing pickled).  Each rank's local-mean gradient is
scaled by ``n_local / n_global`` first, so after ``backward`` every ``.grad`` is the gradient of
the global batch, identical on every rank.

Options of :class:`DataParallel`: ``reduction="ordered"`` (Allgather of the buckets and a sum in
rank order: the same bits run to run for a fixed number of ranks), ``overlap=True`` (for a
``Sequential``: each bucket's non-blocking ``Iallreduce`` starts as soon as the layers holding
its parameters are done, progressed between layers, waited at the end of backward) and
``check_every=N`` / :meth:`DataParallel.check_replicas` (a CRC-32 of every parameter and buffer
compared across the ranks).  ``init(backend="nccl")`` gives an :class:`NCCLComm` (CuPy's NCCL
for CUDA buffers).
"""
from __future__ import annotations

import contextlib
import os
import sys
import time
import traceback
import zlib

import numpy as np

__all__ = ["init", "get_comm", "LocalComm", "MPIComm", "DataParallel", "share", "shares",
           "StructureMismatchError", "ReplicaDriftError", "NCCLComm", "FIRST_BUCKET_MB"]

FIRST_BUCKET_MB = 1.0
_COMM = None
_MPI_ENV = ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK", "MPI_LOCALNRANKS")


class StructureMismatchError(RuntimeError, ValueError):
    """The wrapped models differ across ranks (parameter names, shapes or dtypes)."""


class ReplicaDriftError(RuntimeError):
    """The parameters differ across ranks (:meth:`DataParallel.check_replicas`)."""


class _DoneRequest:
    def Test(self) -> bool:
        return True

    def Wait(self) -> None:
        pass


class LocalComm:
    """A size-1 communicator: every collective is the identity, so all code paths run without MPI."""

    rank, size, local_size = 0, 1, 1
    is_mpi = False

    def allreduce_(self, buf: np.ndarray) -> np.ndarray:
        return buf

    def bcast_(self, buf: np.ndarray, root: int = 0) -> np.ndarray:
        return buf

    def iallreduce_(self, buf: np.ndarray):
        return _DoneRequest()

    def allgather_(self, buf: np.ndarray, out: np.ndarray) -> np.ndarray:
        out[0] = buf
        return out

    def iallgather_(self, buf: np.ndarray, out: np.ndarray):
        out[0] = buf
        return _DoneRequest()

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

    def iallreduce_(self, buf: np.ndarray):
        """Start an in-place non-blocking all-reduce (sum); ``buf`` must not be touched until the
        returned request's ``Wait``."""
        if not buf.flags.c_contiguous:
            raise ValueError("iallreduce_: buffer must be C-contiguous")
        if not buf.size:
            return _DoneRequest()
        return self.comm.Iallreduce(self.MPI.IN_PLACE, buf, op=self.MPI.SUM)

    def allgather_(self, buf: np.ndarray, out: np.ndarray) -> np.ndarray:
        """``out[r] = buf of rank r`` (``out`` of shape ``(size,) + buf.shape``)."""
        if buf.size:
            self.comm.Allgather(buf, out)
        return out

    def iallgather_(self, buf: np.ndarray, out: np.ndarray):
        if not buf.size:
            return _DoneRequest()
        return self.comm.Iallgather(buf, out)

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


class NCCLComm:
    """NCCL (through CuPy's ``cupy.cuda.nccl``) for CUDA buffers (``cupy.ndarray``), with the MPI
    communicator for bootstrap (the NCCL unique id is broadcast over MPI), object collectives and
    host (numpy) buffers.  One GPU per rank: device ``local rank % device count``.  The modules of
    this package hold numpy arrays (there is no user-facing GPU array type), so ``DataParallel``'s
    buckets go through MPI; this communicator serves users' CuPy buffers behind the same interface.
    Not verified on a GPU yet."""

    is_mpi = True

    _NCCL_DTYPES = {"float16": "NCCL_FLOAT16", "float32": "NCCL_FLOAT32", "float64": "NCCL_FLOAT64",
                    "int32": "NCCL_INT32", "int64": "NCCL_INT64"}

    def __init__(self, mpi_comm: "MPIComm") -> None:
        cupy, nccl = _import_nccl()
        ndev = cupy.cuda.runtime.getDeviceCount()
        if ndev < 1:  # pragma: no cover - needs the CUDA runtime without a device
            raise RuntimeError("fusedlearn.distributed: backend='nccl' needs a CUDA GPU, none found")
        self.mpi, self.cupy, self.nccl = mpi_comm, cupy, nccl
        self.rank, self.size, self.local_size = mpi_comm.rank, mpi_comm.size, mpi_comm.local_size
        local = mpi_comm.comm.Split_type(mpi_comm.MPI.COMM_TYPE_SHARED)
        cupy.cuda.Device(local.Get_rank() % ndev).use()
        local.Free()
        uid = nccl.get_unique_id() if self.rank == 0 else None
        uid = mpi_comm.comm.bcast(uid, root=0)
        self.nccl_comm = nccl.NcclCommunicator(self.size, uid, self.rank)

    def _is_gpu(self, buf) -> bool:
        return isinstance(buf, self.cupy.ndarray)

    def _dtype(self, buf):
        name = self._NCCL_DTYPES.get(str(buf.dtype))
        if name is None:
            raise TypeError(f"NCCLComm: dtype {buf.dtype} not supported")
        return getattr(self.nccl, name)

    def allreduce_(self, buf):
        if not self._is_gpu(buf):
            return self.mpi.allreduce_(buf)
        if buf.size:
            stream = self.cupy.cuda.get_current_stream()
            self.nccl_comm.allReduce(buf.data.ptr, buf.data.ptr, buf.size, self._dtype(buf),
                                     self.nccl.NCCL_SUM, stream.ptr)
            stream.synchronize()
        return buf

    def iallreduce_(self, buf):
        if not self._is_gpu(buf):
            return self.mpi.iallreduce_(buf)
        self.allreduce_(buf)
        return _DoneRequest()

    def bcast_(self, buf, root: int = 0):
        if not self._is_gpu(buf):
            return self.mpi.bcast_(buf, root)
        if buf.size:
            stream = self.cupy.cuda.get_current_stream()
            self.nccl_comm.bcast(buf.data.ptr, buf.size, self._dtype(buf), root, stream.ptr)
            stream.synchronize()
        return buf

    def allgather_(self, buf, out):
        return self.mpi.allgather_(buf, out)

    def iallgather_(self, buf, out):
        return self.mpi.iallgather_(buf, out)

    def allgather(self, obj) -> list:
        return self.mpi.allgather(obj)

    def barrier(self) -> None:
        self.mpi.barrier()

    def abort(self, code: int = 1) -> None:
        self.mpi.abort(code)


def _import_nccl():
    try:
        import cupy
        from cupy.cuda import nccl
    except ImportError as exc:
        raise ImportError("fusedlearn.distributed: backend='nccl' needs CuPy built with NCCL "
                          "(pip install cupy-cuda12x) and a CUDA GPU") from exc
    try:
        cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:  # cupy's CUDARuntimeError when there is no driver / device
        raise RuntimeError(f"fusedlearn.distributed: backend='nccl' needs a CUDA GPU: {exc}") from exc
    return cupy, nccl


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
    else a :class:`LocalComm`; ``backend="nccl"``: an :class:`NCCLComm` (CuPy's NCCL for CUDA
    buffers, MPI for the rest; ImportError without CuPy, RuntimeError without a GPU).
    Under MPI it installs an excepthook that aborts the whole job on an
    uncaught exception (no hang), and gives each rank its share of the cores (CPU affinity divided
    by the ranks on this machine) unless ``threads`` is given or ``OMP_NUM_THREADS`` /
    ``FUSEDLEARN_NUM_THREADS`` is set.  Calling it again returns the same communicator."""
    global _COMM
    if _COMM is not None:
        return _COMM
    if backend not in ("auto", "mpi", "local", "nccl"):
        raise ValueError(f"init: backend must be 'auto', 'mpi', 'local' or 'nccl', got {backend!r}")
    if backend == "nccl":
        _import_nccl()  # the clear error before MPI is set up
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
        if backend == "nccl":
            _COMM = NCCLComm(_COMM)
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


def _noop() -> None:
    pass


def _sum_rank_order(gathered: np.ndarray, out: np.ndarray) -> np.ndarray:
    """``out = ((g[0] + g[1]) + g[2]) + ...``: a fixed summation order, in the buckets' dtype."""
    np.copyto(out, gathered[0])
    for r in range(1, gathered.shape[0]):
        out += gathered[r]
    return out


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

    def __init__(self, module, bucket_cap_mb: float = 25.0, comm=None, first_bucket_mb: float = FIRST_BUCKET_MB,
                 reduction: str = "sum", overlap: bool = False, check_every: int = 0):
        if reduction not in ("sum", "ordered"):
            raise ValueError(f"DataParallel: reduction must be 'sum' or 'ordered', got {reduction!r}")
        if int(check_every) < 0:
            raise ValueError(f"DataParallel: check_every must be >= 0, got {check_every}")
        object.__setattr__(self, "module", module)
        object.__setattr__(self, "comm", get_comm() if comm is None else comm)
        object.__setattr__(self, "_sync", True)
        object.__setattr__(self, "_n_local", 0)
        object.__setattr__(self, "_n_global", None)
        object.__setattr__(self, "_grad_scale", "mean")
        object.__setattr__(self, "reduction", reduction)
        object.__setattr__(self, "overlap", bool(overlap))
        object.__setattr__(self, "check_every", int(check_every))
        object.__setattr__(self, "_steps", 0)
        object.__setattr__(self, "comm_seconds", 0.0)  # time spent inside the reduction calls
        self._check_structure()
        self._broadcast_state()
        params = [p for p in module.parameters() if p.requires_grad]
        object.__setattr__(self, "buckets", make_buckets(params, bucket_cap_mb, first_bucket_mb))
        # overlap: the buckets each top-level layer of a Sequential completes, in backward order
        ready = {}
        layers = list(module._modules.values()) if type(module).__name__ == "Sequential" else []
        if layers:
            owner = {}
            for i, m in enumerate(layers):
                for q in m.parameters():
                    owner[id(q)] = i
            for bi, b in enumerate(self.buckets):
                # a bucket is complete once the earliest layer holding one of its parameters is done
                ready.setdefault(min(owner.get(id(q), 0) for q in b.params), []).append(bi)
        object.__setattr__(self, "_layers", layers)
        object.__setattr__(self, "_ready_after", ready)

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
        return self._backward(grad_out, True)

    def backward_params(self, grad_out) -> None:
        self._backward(grad_out, False)

    def _backward(self, grad_out, input_grad):
        self._maybe_check()
        self._attach_views()
        if self.overlap and self._sync and self._layers:
            return self._backward_overlapped(grad_out, input_grad)
        if input_grad:
            out = self.module.backward(grad_out)
        else:
            out = getattr(self.module, "backward_params", self.module.backward)(grad_out)
        self._after_backward()
        return out

    def _backward_overlapped(self, grad_out, input_grad, run_layers: bool = True):
        """Sequential's layer loop, starting each bucket's non-blocking reduction as soon as the
        layers holding its parameters are done, and progressing the pending ones between layers.
        ``run_layers=False`` (a rank with no rows): no layer runs, but the same reductions start
        in the same order, as MPI must see on every rank."""
        w = self._weight()
        pending, g = [], grad_out
        layers = self._layers
        for i in range(len(layers) - 1, -1, -1):
            m = layers[i]
            if run_layers and i == 0 and not input_grad:
                m.backward_params(g)
                g = None
            elif run_layers:
                g = m.backward(g)
            for bi in self._ready_after.get(i, ()):
                b = self.buckets[bi]
                self._reattach(b)
                if w != 1.0:
                    b.buffer *= b.dtype.type(w)
                pending.append(self._start(b))
            if pending:
                t0 = time.perf_counter()
                for req, _ in pending:
                    req.Test()
                self.comm_seconds += time.perf_counter() - t0
        t0 = time.perf_counter()
        for req, finish in pending:
            req.Wait()
            finish()
        self.comm_seconds += time.perf_counter() - t0
        object.__setattr__(self, "_n_global", None)
        return g

    def backward_empty(self) -> None:
        """Join the reduction with zero local rows (a rank whose share of the batch is empty)."""
        object.__setattr__(self, "_n_local", 0)
        self._maybe_check()
        self._attach_views()
        if self.overlap and self._sync and self._layers:
            # the other ranks start non-blocking reductions bucket by bucket, which MPI never
            # matches with a blocking one
            self._backward_overlapped(None, False, run_layers=False)
            return
        self._after_backward()

    def _reattach(self, b) -> None:
        for p, v in zip(b.params, b.views):
            if p.grad is not v:
                if p.grad is not None:
                    np.copyto(v, p.grad)
                p.grad = v

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

    def _weight(self) -> float:
        n_global = self._global_rows()
        if self._grad_scale == "mean":
            return self._n_local / n_global if n_global else 0.0
        return 1.0

    def _start(self, b):
        """Start the reduction of bucket ``b``: ``(request, finish)``; ``finish()`` after ``Wait``."""
        if self.reduction == "sum":
            return self.comm.iallreduce_(b.buffer), _noop
        gathered = np.empty((self.comm.size,) + b.buffer.shape, dtype=b.dtype)
        return self.comm.iallgather_(b.buffer, gathered), lambda: _sum_rank_order(gathered, b.buffer)

    def reduce_gradients(self) -> None:
        """Scale the local gradients and reduce every bucket in place: ``reduction="sum"``, MPI's
        ``Allreduce`` (its algorithm picks the summation order); ``"ordered"``, ``Allgather`` of
        the buckets and a sum in rank order here (the same bits run to run for a fixed number of
        ranks, at ``(p-1) S`` bytes received per rank instead of the ring's ``2 (p-1)/p S`` and
        ``p S`` of memory)."""
        w = self._weight()
        for b in self.buckets:
            if w != 1.0:
                b.buffer *= b.dtype.type(w)
        t0 = time.perf_counter()
        for b in self.buckets:
            if self.reduction == "sum":
                self.comm.allreduce_(b.buffer)
            else:
                gathered = np.empty((self.comm.size,) + b.buffer.shape, dtype=b.dtype)
                self.comm.allgather_(b.buffer, gathered)
                _sum_rank_order(gathered, b.buffer)
        self.comm_seconds += time.perf_counter() - t0
        object.__setattr__(self, "_n_global", None)

    # ---- replica drift -----------------------------------------------------------------
    def _maybe_check(self) -> None:
        object.__setattr__(self, "_steps", self._steps + 1)
        if self.check_every and self._steps % self.check_every == 0:
            self.check_replicas()

    def check_replicas(self) -> None:
        """Compare a checksum (CRC-32 of the bytes) of every parameter and buffer across the ranks;
        :class:`ReplicaDriftError` on every rank naming the first one that differs."""
        sums = [(k, zlib.crc32(np.ascontiguousarray(v).view(np.uint8).ravel()))
                for k, v in self.module.state_dict().items()]
        allsums = self.comm.allgather([c for _, c in sums])
        for i, (k, c0) in enumerate(zip([k for k, _ in sums], allsums[0])):
            bad = [r for r, s in enumerate(allsums) if s[i] != c0]
            if bad:
                raise ReplicaDriftError(f"DataParallel: replicas drifted: {k!r} differs between rank 0 "
                                        f"and rank(s) {bad} (checked after {self._steps} backward calls)")

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

    def average_buffers(self) -> None:
        """Average the floating-point buffers (BatchNorm's ``running_mean`` / ``running_var``) over
        the ranks, in place, as float64 sums; integer buffers (``num_batches_tracked``) take rank
        0's value (rank 0 has rows in every non-empty batch; a rank with an empty share skipped
        its forward and counted one batch fewer).  ``fit`` calls it before evaluation and
        checkpoints."""
        if self.comm.size == 1:
            return
        for _, b in self.module.named_buffers():
            if not isinstance(b, np.ndarray) or not b.size:
                continue
            if b.dtype.kind != "f":
                if b.flags.c_contiguous:
                    self.comm.bcast_(b)
                continue
            acc = np.ascontiguousarray(b, dtype=np.float64).copy()
            self.comm.allreduce_(acc)
            np.copyto(b, acc / self.comm.size, casting="same_kind")

    def seed_rank_streams(self, seed) -> None:
        """Give every random layer (``Dropout``, recurrent dropout) of rank ``r > 0`` its own stream,
        seeded from ``(seed, r, layer index)``; rank 0 keeps its stream, so 1 rank is unchanged."""
        if self.comm.rank == 0:
            return
        i = 0
        for _, m in self.module.named_modules():
            if callable(getattr(m, "manual_seed", None)) and callable(getattr(m, "get_rng_state", None)):
                m.manual_seed(np.random.SeedSequence([int(seed) & (2 ** 63 - 1), self.comm.rank, i]))
                i += 1


def convert_sync_batchnorm(module, comm=None):
    """``module`` with every ``BatchNorm2d`` replaced by a ``fl.nn.SyncBatchNorm2d`` (same
    parameters and buffers), as ``torch.nn.SyncBatchNorm.convert_sync_batchnorm``."""
    from .nn.sync_batchnorm import SyncBatchNorm2d
    return SyncBatchNorm2d.convert(module, comm)


__all__ += ["convert_sync_batchnorm"]
