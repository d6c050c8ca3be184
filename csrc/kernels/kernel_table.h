// The table of CPU kernels one instruction-set build provides.  Each kernel
// source is compiled once per ISA; each build exports its table and the
// dispatcher (core/dispatch.cpp) picks one at import.
#pragma once
#include <cstdint>
#include "kernels/gemm_args.h"
#include "kernels/conv_args.h"
#include "kernels/adafactor_args.h"
#include "kernels/optim_hyper.h"
#include "kernels/rnn_args.h"
#include "kernels/ran_args.h"

namespace fl {

enum class DType : int { f32 = 0, f64 = 1 };

// A list of tensors viewed as one flat index space [0, offsets[count]).
// stream[0] = parameters (written), stream[1] = gradients (read),
// stream[2 + k] = optimizer state k (written) or nullptr when unused.
// Reductions and maps use stream[0] only.
constexpr int kMaxStreams = 2 + kMaxStates;
struct FlatList {
  int64_t count = 0;
  const int64_t* offsets = nullptr;  // count + 1 prefix sums of numel
  void* const* stream[kMaxStreams] = {};
};

enum RuleId : int {
#define FL_RULE_ENUM(name, R, H, S) kRule_##name,
  FL_OPTIM_RULES(FL_RULE_ENUM)
#undef FL_RULE_ENUM
  kNumRules
};

using OptimKernel = void (*)(const void* hyper, const FlatList& list);
using ReduceKernel = double (*)(const FlatList& list);
using MapKernel = void (*)(const FlatList& list, double a, double b);
using SgemmKernel = void (*)(const GemmArgs<float>& args);
using DgemmKernel = void (*)(const GemmArgs<double>& args);
// floats sgemm_pack_b writes for these arguments (0: this call would not use a packed B)
using SgemmPackedSizeFn = int64_t (*)(const GemmArgs<float>& args);
using SgemmPackBFn = void (*)(const GemmArgs<float>& args, float* dst);  // dst 64-byte aligned
using SgemmPackedMaxMFn = int64_t (*)();  // the most rows M a call may have to read a packed B

struct CpuKernels {
  const char* isa;
  OptimKernel optim[2][kNumRules];  // [dtype][rule]
  void (*adafactor[2])(const AdafactorArgs&);  // one tensor per call (cpu/optim/adafactor_kernels.cpp)
  ReduceKernel sumsq[2];            // sum of squares, accumulated in double
  ReduceKernel absmax[2];           // max |x| (NaN if any NaN)
  ReduceKernel nonfinite[2];        // non-zero when any element is NaN or +-Inf
  MapKernel scale[2];               // x *= a
  MapKernel clamp[2];               // x = min(max(x, a), b)
  SgemmKernel sgemm;                // BLIS-style packed GEMM, fused epilogue (cpu/gemm)
  DgemmKernel dgemm;                // float64 reference GEMM, same interface
  SgemmPackedSizeFn sgemm_packed_b_size;  // pack op(B) once for many sgemm calls (GemmArgs::packed_b)
  SgemmPackBFn sgemm_pack_b;
  SgemmPackedMaxMFn sgemm_packed_max_m;
  // recurrent layers (cpu/rnn): one fused cell phase over B rows, and one
  // layer-direction over a whole sequence (forward / backward)
  void (*rnn_cell_f32)(const RnnCellArgs<float>&);
  void (*rnn_cell_f64)(const RnnCellArgs<double>&);
  void (*rnn_forward_f32)(const RnnSeqArgs<float>&);
  void (*rnn_forward_f64)(const RnnSeqArgs<double>&);
  void (*rnn_backward_f32)(const RnnSeqArgs<float>&);
  void (*rnn_backward_f64)(const RnnSeqArgs<double>&);
  ConvKernelSet<float> conv_f32;    // conv2d / pooling / batch norm (cpu/conv)
  ConvKernelSet<double> conv_f64;
  RanKernelSet ran;                 // resource-allocating networks, float64 (cpu/ran)
};

// Threads kernels may use (fl::set_num_threads; defaults to OpenMP's maximum).
int configured_threads();

namespace isa_scalar { const CpuKernels& kernels(); }
namespace isa_avx2 { const CpuKernels& kernels(); }
namespace isa_avx512 { const CpuKernels& kernels(); }

}  // namespace fl
