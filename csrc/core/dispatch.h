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

int num_threads();
void set_num_threads(int n);
bool openmp_enabled();

}  // namespace fl
