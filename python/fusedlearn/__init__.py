"""fusedlearn: neural-network training with fused C++ (AVX2 / AVX-512) and CUDA kernels.

Kernels take any array that speaks DLPack or the buffer protocol (numpy,
PyTorch, CuPy) without copying it; names ending in ``_`` update in place.
"""
from __future__ import annotations

import os as _os
import warnings as _warnings

from . import _C
from ._version import __version__

__all__ = [
    "__version__", "build_info", "set_num_threads", "get_num_threads", "set_isa", "get_isa",
    "functional", "optim",
    "nn", "data", "train", "save", "load",
    "regularize",
    "models", "ran",
]


def _check_isa_env() -> None:
    want = _os.environ.get("FUSEDLEARN_ISA")
    if want and want not in _C.available_isas():
        _warnings.warn(
            f"FUSEDLEARN_ISA={want!r} is not available here (available: {', '.join(_C.available_isas())}); "
            f"using {_C.selected_isa()!r}",
            RuntimeWarning,
            stacklevel=2,
        )


_check_isa_env()


def build_info() -> dict:
    """What this build of fusedlearn can do on this machine."""
    return {
        "version": __version__,
        "cpu_isa": list(_C.available_isas()),
        "compiled_isa": list(_C.compiled_isas),
        "selected_isa": _C.selected_isa(),
        "cuda_built": bool(_C.cuda_built()),
        "cuda_runtime": _C.cuda_runtime_version() or None,
        "cuda_devices": int(_C.cuda_device_count()),
        "bf16_matrix": dict(_C.matrix_features()),
        "openmp": bool(_C.openmp_enabled()),
        "openmp_threads": int(_C.get_num_threads()),
    }


def set_num_threads(n: int) -> None:
    """Threads the CPU kernels may use (default: OpenMP's, i.e. the cores available)."""
    _C.set_num_threads(int(n))


def get_num_threads() -> int:
    return int(_C.get_num_threads())


def set_isa(name: str) -> None:
    """Use another instruction-set build: 'scalar', 'avx2' or 'avx512' (only ones this CPU runs)."""
    _C.set_isa(str(name))


def get_isa() -> str:
    return _C.selected_isa()


from . import functional, optim  # noqa: E402
from . import data, nn, train  # noqa: E402
from . import models  # noqa: E402
from . import ran  # noqa: E402
from .checkpoint import load, save  # noqa: E402
from . import regularize  # noqa: E402
