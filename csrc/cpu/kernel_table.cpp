// Builds this instruction set's kernel table (compiled once per ISA).
#include "cpu/isa_entry.h"
#include "core/macros.h"

#define FL_STR2(x) #x
#define FL_STR(x) FL_STR2(x)

namespace fl {
namespace FL_ISA_NS {
namespace {
CpuKernels make_table() {
  CpuKernels k{};
  k.isa = FL_ISA_NAME;
  fill_optim_kernels(k);
  fill_adafactor_kernels(k);
  fill_elementwise_kernels(k);
  fill_gemm_kernels(k);
  fill_rnn_kernels(k);
  fill_conv_kernels(k);
  fill_pool_norm_kernels(k);
  fill_ran_kernels(k);
  return k;
}
}  // namespace

const CpuKernels& kernels() {
  static const CpuKernels table = make_table();
  return table;
}
}  // namespace FL_ISA_NS
}  // namespace fl
