// Stand-in for the CUDA build when no CUDA compiler was found.
#include <stdexcept>
#include "cuda/cuda_api.h"
#include "core/errors.h"

namespace fl {
namespace cuda {
namespace {
[[noreturn]] void fail() {
  throw ValueError("fusedlearn was built without CUDA: GPU arrays are not supported by this build");
}
}  // namespace
bool built() { return false; }
int device_count() { return 0; }
std::string runtime_version() { return ""; }
void optim_step(int, const void*, DType, const FlatList&, int) { fail(); }
double sumsq(DType, const FlatList&, int) { fail(); }
void adafactor_step(const AdafactorArgs&, DType, int) { fail(); }
double absmax(DType, const FlatList&, int) { fail(); }
bool nonfinite(DType, const FlatList&, int) { fail(); }
void scale(DType, const FlatList&, double, int) { fail(); }
void clamp(DType, const FlatList&, double, double, int) { fail(); }
void gemm_f32(const GemmArgs<float>&, int) { fail(); }
void gemm_f64(const GemmArgs<double>&, int) { fail(); }
void rnn_forward_f32(const RnnSeqArgs<float>&, int) { fail(); }
void rnn_backward_f32(const RnnSeqArgs<float>&, int) { fail(); }
void conv2d_forward_f32(const ConvArgs<float>&, int) { fail(); }
void conv2d_backward_f32(const ConvArgs<float>&, int) { fail(); }
void max_pool2d_forward_f32(const PoolArgs<float>&, int) { fail(); }
void max_pool2d_backward_f32(const PoolArgs<float>&, int) { fail(); }
void avg_pool2d_forward_f32(const PoolArgs<float>&, int) { fail(); }
void avg_pool2d_backward_f32(const PoolArgs<float>&, int) { fail(); }
void batch_norm_forward_f32(const BatchNormArgs<float>&, int) { fail(); }
void batch_norm_backward_f32(const BatchNormArgs<float>&, int) { fail(); }
}  // namespace cuda
}  // namespace fl
