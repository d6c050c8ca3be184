import os

import pytest

import fusedlearn as fl


def _cpuinfo_flags():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return None


def test_build_info_reports_bf16_matrix_features():
    info = fl.build_info()["bf16_matrix"]
    assert set(info) == {"avx512_bf16", "amx_tile", "amx_bf16", "os_tile_state", "tile_permission"}
    assert all(isinstance(v, bool) for v in info.values())
    # permission needs the OS state, which needs the CPU's tiles
    assert info["tile_permission"] <= info["os_tile_state"] <= info["amx_tile"]


def test_bf16_matrix_features_match_the_kernels_view_of_the_cpu():
    flags = _cpuinfo_flags()
    if flags is None or os.uname().machine != "x86_64":
        pytest.skip("needs Linux /proc/cpuinfo on x86_64")
    info = fl.build_info()["bf16_matrix"]
    # /proc/cpuinfo lists what the kernel both detected and enabled
    assert info["amx_tile"] == ("amx_tile" in flags)
    assert info["amx_bf16"] == ("amx_bf16" in flags)
    assert info["avx512_bf16"] == ("avx512_bf16" in flags and "avx512" in fl.build_info()["cpu_isa"])
    if "amx_tile" in flags:
        assert info["os_tile_state"] and info["tile_permission"]
