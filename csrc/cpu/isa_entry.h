// Entry points each per-ISA build defines (in its own namespace) and
// collects into its CpuKernels table.
#pragma once
#include "kernels/kernel_table.h"

namespace fl {
namespace FL_ISA_NS {
void fill_optim_kernels(CpuKernels& k);
void fill_adafactor_kernels(CpuKernels& k);
void fill_elementwise_kernels(CpuKernels& k);
void fill_gemm_kernels(CpuKernels& k);
void fill_rnn_kernels(CpuKernels& k);
void fill_conv_kernels(CpuKernels& k);
void fill_pool_norm_kernels(CpuKernels& k);
void fill_ran_kernels(CpuKernels& k);
}  // namespace FL_ISA_NS
}  // namespace fl
