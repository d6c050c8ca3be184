// Plain-data arguments of the convolution, pooling and batch-norm kernels,
// shared by the CPU (per-ISA) and CUDA builds.  NCHW, contiguous, as torch.
#pragma once
#include <cstdint>

#include "core/macros.h"
#include "kernels/gemm_args.h"

namespace fl {

// y[n, k, oh, ow] = act(bias[k] + sum_{c, r, s} w[k, c, r, s] *
//                       x[n, g*Cg + c, oh*stride_h - pad_h + r*dil_h, ow*stride_w - pad_w + s*dil_w])
// for k in group g = k / Kg, with Cg = C / groups, Kg = K / groups; taps outside the image read 0.
struct ConvShape {
  int64_t N = 0, C = 0, H = 0, W = 0;  // input
  int64_t K = 0, R = 0, S = 0;         // weight [K, C / groups, R, S]
  int64_t OH = 0, OW = 0;              // output
  int64_t stride_h = 1, stride_w = 1, pad_h = 0, pad_w = 0, dil_h = 1, dil_w = 1, groups = 1;
  FL_HD int64_t Cg() const { return C / groups; }
  FL_HD int64_t Kg() const { return K / groups; }
};

// Forward: y = act(conv(x, w) + bias).  bias may be null.
// Backward: with g = grad_y * act'(y) (y is read only when act != identity),
//   dx = conv_transpose(g, w)                   (when dx != null; overwritten)
//   dw (+)= sum_n g (x) im2col(x)               (when dw != null; added when accumulate)
//   db (+)= sum_{n, oh, ow} g                   (when db != null; added when accumulate)
template <class T>
struct ConvArgs {
  ConvShape s;
  const T* x = nullptr;
  const T* w = nullptr;
  const T* bias = nullptr;
  T* y = nullptr;         // forward: written; backward: read for the activation's derivative
  Activation act = Activation::identity;
  const T* dy = nullptr;  // backward only
  T* dx = nullptr;
  T* dw = nullptr;
  T* db = nullptr;
  bool accumulate = false;
};

// Max / average pooling over planes [N*C, H, W] -> [N*C, OH, OW].  Windows
// start at oh*stride_h - pad_h; max pooling spans dil_h*(kh-1)+1 rows.
// indices (max): flat ih*W + iw of the chosen input element per output, as torch.
// Average: divisor = kh*kw clipped to the padded image (count_include_pad) or to
// the image itself (not count_include_pad), or divisor_override when > 0.
struct PoolShape {
  int64_t planes = 0, H = 0, W = 0, OH = 0, OW = 0;
  int64_t kh = 1, kw = 1, stride_h = 1, stride_w = 1, pad_h = 0, pad_w = 0, dil_h = 1, dil_w = 1;
  bool count_include_pad = true;
  int64_t divisor_override = 0;
};
template <class T>
struct PoolArgs {
  PoolShape s;
  const T* x = nullptr;  // forward input
  T* y = nullptr;        // forward output
  int64_t* indices = nullptr;  // max: written by forward, read by backward
  const T* dy = nullptr;  // backward
  T* dx = nullptr;        // backward (overwritten)
};

// Batch normalisation over [N, C, HW] per channel c:
//   training: mean, var = biased batch statistics; save_mean, save_invstd = mean, 1/sqrt(var + eps);
//             running_mean = (1 - m) running_mean + m mean,
//             running_var  = (1 - m) running_var  + m var * M / (M - 1)   (M = N*HW; skipped when null)
//   eval:     mean, var = running_mean, running_var
//   y = act((x - mean) * invstd * weight + bias)   (weight / bias null: 1 / 0; act: identity or relu)
// Backward (g = dy masked by y > 0 when act is relu; xhat = (x - mean) * invstd):
//   dbias (+)= sum g, dweight (+)= sum g xhat
//   training: dx = weight * invstd * (g - mean(g) - xhat * mean(g xhat));   eval: dx = weight * invstd * g
template <class T>
struct BatchNormArgs {
  int64_t N = 0, C = 0, HW = 0;
  const T* x = nullptr;
  T* y = nullptr;  // forward: written; backward: read when act is relu
  const T* weight = nullptr;
  const T* bias = nullptr;
  T* running_mean = nullptr;
  T* running_var = nullptr;
  T* save_mean = nullptr;    // [C]: training forward writes, backward reads
  T* save_invstd = nullptr;  // [C]
  double momentum = 0.1;     // the factor m above (the caller resolves momentum=None)
  double eps = 1e-5;
  bool training = true;
  Activation act = Activation::identity;
  const T* dy = nullptr;  // backward
  T* dx = nullptr;
  T* dweight = nullptr;
  T* dbias = nullptr;
  bool accumulate = false;
};

// GemmArgs for C (ldc) = op(A) (lda) @ op(B) (ldb) + beta C, no epilogue: the
// products the convolution drivers (CPU and CUDA) issue.
template <class T>
GemmArgs<T> conv_gemm(int64_t M, int64_t N, int64_t K, bool ta, const T* A, int64_t lda, bool tb, const T* B,
                      int64_t ldb, T* C, int64_t ldc, T beta) {
  GemmArgs<T> g;
  g.M = M;
  g.N = N;
  g.K = K;
  g.trans_a = ta;
  g.trans_b = tb;
  g.A = A;
  g.lda = lda;
  g.B = B;
  g.ldb = ldb;
  g.C = C;
  g.ldc = ldc;
  g.beta = beta;
  return g;
}

// The algorithm family each pass of a convolution takes on one ISA ("im2col", "pointwise",
// "depthwise", "direct", "channel_vector"; cpu/conv/conv2d.cpp), static strings.
struct ConvPathNames {
  const char* forward;
  const char* input_grad;
  const char* weight_grad;
};

template <class T>
struct ConvKernelSet {
  void (*conv2d_forward)(const ConvArgs<T>&);
  void (*conv2d_backward)(const ConvArgs<T>&);
  ConvPathNames (*conv2d_paths)(const ConvShape&);  // the choice conv2d_forward / _backward make
  void (*activation_)(Activation, T*, int64_t);      // y = act(y): the one every conv path applies
  void (*max_pool2d_forward)(const PoolArgs<T>&);
  void (*max_pool2d_backward)(const PoolArgs<T>&);
  void (*avg_pool2d_forward)(const PoolArgs<T>&);
  void (*avg_pool2d_backward)(const PoolArgs<T>&);
  void (*batch_norm_forward)(const BatchNormArgs<T>&);
  void (*batch_norm_backward)(const BatchNormArgs<T>&);
};

}  // namespace fl
