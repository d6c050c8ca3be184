// What the CUDA build offers the host code.  When the package is built
// without a CUDA compiler, cuda/cuda_stub.cpp provides these and reports
// "not built"; the module always imports, with or without a GPU or driver.
#pragma once
#include <string>
#include "kernels/kernel_table.h"
#include "kernels/gemm_args.h"
#include "kernels/conv_args.h"
#include "kernels/adafactor_args.h"

namespace fl {
namespace cuda {

bool built();
// Number of usable devices; 0 when no driver or GPU is present (never throws).
int device_count();
std::string runtime_version();

// One launch for the whole list (multi-tensor apply).  `list` holds device
// pointers; `device` is the CUDA ordinal they live on.  Throws ValueError /
// std::runtime_error with the CUDA error string on failure.
void optim_step(int rule, const void* hyper, DType dtype, const FlatList& list, int device);
double sumsq(DType dtype, const FlatList& list, int device);
// Adafactor's step on one tensor (kernels/adafactor_args.h), device pointers
// on ordinal `device`; synchronous.
void adafactor_step(const AdafactorArgs& args, DType dtype, int device);
double absmax(DType dtype, const FlatList& list, int device);
bool nonfinite(DType dtype, const FlatList& list, int device);
void scale(DType dtype, const FlatList& list, double a, int device);
void clamp(DType dtype, const FlatList& list, double lo, double hi, int device);

// GEMM with the fused epilogue (see kernels/gemm_args.h).  All pointers in
// `args` are device pointers on CUDA ordinal `device`; leading dimensions are
// in elements, row-major.  Runs on the current stream of that device and
// returns when the result is ready (synchronous).  Throws ValueError /
// std::runtime_error with the CUDA error string on failure.
void gemm_f32(const GemmArgs<float>& args, int device);
void gemm_f64(const GemmArgs<double>& args, int device);

// One recurrent layer-direction over a sequence (kernels/rnn_args.h, the same
// driver as the CPU's): the fused cell kernels of cuda/rnn plus gemm_f32 for
// the products.  Device pointers, except `lengths`, which is on the host.
// Synchronous.
void rnn_forward_f32(const RnnSeqArgs<float>& args, int device);
void rnn_backward_f32(const RnnSeqArgs<float>& args, int device);
// Convolution (im2col per image + the SGEMM above), pooling and batch norm,
// float32, device pointers, synchronous (cuda/conv).  Max pooling writes no
// indices on the GPU (args.indices must be null): its backward recomputes the
// argmax from args.x with the CPU's tie rule (first maximum; NaN wins).
void conv2d_forward_f32(const ConvArgs<float>& args, int device);
void conv2d_backward_f32(const ConvArgs<float>& args, int device);
void max_pool2d_forward_f32(const PoolArgs<float>& args, int device);
void max_pool2d_backward_f32(const PoolArgs<float>& args, int device);
void avg_pool2d_forward_f32(const PoolArgs<float>& args, int device);
void avg_pool2d_backward_f32(const PoolArgs<float>& args, int device);
void batch_norm_forward_f32(const BatchNormArgs<float>& args, int device);
void batch_norm_backward_f32(const BatchNormArgs<float>& args, int device);

}  // namespace cuda
}  // namespace fl
