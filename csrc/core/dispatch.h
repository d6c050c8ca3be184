// CPU feature detection, the choice of kernel build, and threading.
#pragma once
#include <string>
#include <vector>
#include "kernels/kernel_table.h"

namespace fl {

// ISA builds this CPU can run, lowest first: "scalar", "avx2", "avx512".
const std::vector<std::string>& available_isas();
// The kernel table in use.  Chosen at first use: the best available, or the
// level named by FUSEDLEARN_ISA (which may only lower it).
const CpuKernels& cpu_kernels();
const char* selected_isa();
// Switch builds at run time (tests use it).  Throws ValueError for an unknown
// name or one this CPU cannot run.
void set_isa(const std::string& name);

// The CPU's bf16 matrix features (x86 CPUID leaf 7) and, for AMX, whether the
// OS saves tile state (XCR0) and granted this process tile permission (Linux
// arch_prctl, asked on the first call).  All false elsewhere.
struct MatrixFeatures {
  bool avx512_bf16 = false;     // vdpbf16ps on zmm / ymm
  bool amx_tile = false;        // tile registers (CPUID)
  bool amx_bf16 = false;        // tdpbf16ps (CPUID)
  bool os_tile_state = false;   // XCR0 XTILECFG and XTILEDATA set
  bool tile_permission = false; // the kernel granted XTILEDATA to this process
};
const MatrixFeatures& matrix_features();

int num_threads();
void set_num_threads(int n);
bool openmp_enabled();

}  // namespace fl
