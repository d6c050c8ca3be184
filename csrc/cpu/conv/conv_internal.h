// Declarations shared by the convolution files (compiled once per ISA, namespace
// fl::FL_ISA_NS::conv): the shape predicates that decide which family runs a
// shape (used by the selection in conv2d.cpp), the lane type of the direct and
// channel-vector kernels, and each family's entry points (defined, and
// instantiated for float and double, in its own file):
//   conv_im2col.cpp          im2col / col2im bands + GEMM (also 1x1 "pointwise", several small images per band)
//   conv_depthwise.cpp       one input channel per group
//   conv_direct.cpp          direct kernel, vectors along the output width (forward, dw, stride-1 dx)
//   conv_channel_vector.cpp  vectors along the output channels (forward, dw, strided dx)
//   conv2d.cpp               ConvPath, the path selection, the forward and backward drivers
#pragma once
#include <algorithm>
#include <cstdint>

#include "cpu/conv/conv_common.h"
#include "cpu/tuning.h"
#include "kernels/conv_args.h"
#include "kernels/vec.h"

namespace fl {
namespace FL_ISA_NS {
namespace conv {
using namespace conv_common;

// ---- shapes --------------------------------------------------------------------------------------
inline bool is_pointwise(const ConvShape& p) {
  return p.R == 1 && p.S == 1 && p.stride_h == 1 && p.stride_w == 1 && p.pad_h == 0 && p.pad_w == 0;
}
inline bool is_depthwise(const ConvShape& p) { return p.groups > 1 && p.Cg() == 1; }

// Threads for a convolution of this size (cpu/team.h): a thread pays for itself at ~2 MFLOP.
inline int conv_team(const ConvShape& p, int64_t items) {
  const double flops = 2.0 * double(p.N) * double(p.K) * double(p.OH * p.OW) * double(p.Cg() * p.R * p.S);
  return team_for(items, flops, 2.0e6);
}

// ---- lanes of the direct and channel-vector kernels ---------------------------------------------
// The ISA's SIMD type for float, otherwise a fixed array the compiler vectorises (float64, and
// float in the scalar build).
template <class T>
struct DirectVec {
#if defined(__AVX512F__)
  static constexpr int width = int(64 / sizeof(T));
#elif defined(__AVX2__)
  static constexpr int width = int(32 / sizeof(T));
#else
  static constexpr int width = int(16 / sizeof(T));
#endif
  struct V {
    T v[width];
  };
  static V load(const T* p) {
    V r;
    for (int i = 0; i < width; ++i) r.v[i] = p[i];
    return r;
  }
  static V set1(T x) {
    V r;
    for (int i = 0; i < width; ++i) r.v[i] = x;
    return r;
  }
  static V fma(V a, V b, V c) {
    for (int i = 0; i < width; ++i) c.v[i] += a.v[i] * b.v[i];
    return c;
  }
  static void store(T* p, V a) {
    for (int i = 0; i < width; ++i) p[i] = a.v[i];
  }
  static T hsum(V a) {
    T r = 0;
    for (int i = 0; i < width; ++i) r += a.v[i];
    return r;
  }
  static V relu(V a) {
    for (int i = 0; i < width; ++i) a.v[i] = a.v[i] > T(0) ? a.v[i] : T(0);
    return a;
  }
};
#if defined(FL_HAVE_SIMD)
template <>
struct DirectVec<float> {
  using V = SimdOps::V;
  static constexpr int width = SimdOps::width;
  static V load(const float* p) { return SimdOps::load(p); }
  static V set1(float x) { return V(x); }
#if defined(__AVX512F__)
  static V fma(V a, V b, V c) { return _mm512_fmadd_ps(a.v, b.v, c.v); }
#else
  static V fma(V a, V b, V c) { return _mm256_fmadd_ps(a.v, b.v, c.v); }
#endif
  static void store(float* p, V a) { SimdOps::store(p, a); }
  static float hsum(V a) { return SimdOps::hsum(a); }
  static V relu(V a) { return vmax(a, V(0.0f)); }
};
#endif

// ---- which family can take a shape --------------------------------------------------------------
// Direct (vectors along the width): stride 1, dilation 1, Cg*R*S <= kDirectMaxTaps, and chunks
// wasting at most a quarter of the row (an 8x8 output in 16-wide chunks would compute twice the
// work; the GEMM measured faster there).
template <class T>
bool use_direct(const ConvShape& p) {
  constexpr int64_t L = DirectVec<T>::width * tuning::kDirectNV;
  const int64_t waste = (p.OW + L - 1) / L * L - p.OW;
  return p.stride_h == 1 && p.stride_w == 1 && p.dil_h == 1 && p.dil_w == 1 && !is_pointwise(p) &&
         !is_depthwise(p) && p.Cg() * p.R * p.S <= tuning::kDirectMaxTaps && 4 * waste <= p.OW;
}
// Direct weight gradient: the direct shapes with S = 3 or 5 (the tap loop unrolled).
template <class T>
bool direct_dw_ok(const ConvShape& p) {
  return use_direct<T>(p) && (p.S == 3 || p.S == 5);
}

// Output channels of a group rounded up to whole vectors.
template <class T>
int64_t cv_kp(const ConvShape& p) {
  constexpr int VW = DirectVec<T>::width;
  return (p.Kg() + VW - 1) / VW * VW;
}
// Channel-vector forward and weight gradient: worth it when at least 3/4 of the lanes hold a
// channel (not for LeNet's 6 channels).
template <class T>
bool cv_lanes_ok(const ConvShape& p) {
  return !is_pointwise(p) && !is_depthwise(p) && 4 * p.Kg() >= 3 * cv_kp<T>(p);
}

// The input gradient of a stride-1, dilation-1 convolution as a forward convolution: dx = conv(g, w')
// with K input channels, w'[c, k, r, s] = w[k, c, R-1-r, S-1-s] (per group) and padding R-1-pad_h,
// S-1-pad_w (docs/math/convolution.md).  Its shape:
inline ConvShape transposed_shape(const ConvShape& p) {
  ConvShape t = p;
  t.C = p.K;
  t.H = p.OH;
  t.W = p.OW;
  t.K = p.C;
  t.OH = p.H;
  t.OW = p.W;
  t.pad_h = p.R - 1 - p.pad_h;
  t.pad_w = p.S - 1 - p.pad_w;
  return t;
}
// ... usable when the transposed convolution takes the direct or the channel-vector forward.
template <class T>
bool direct_dx_ok(const ConvShape& p) {
  if (!(p.stride_h == 1 && p.stride_w == 1 && p.dil_h == 1 && p.dil_w == 1 && p.pad_h <= p.R - 1 &&
        p.pad_w <= p.S - 1 && !is_pointwise(p) && !is_depthwise(p)))
    return false;
  const ConvShape t = transposed_shape(p);
  return use_direct<T>(t) || cv_lanes_ok<T>(t);
}
// Strided input gradient by stride phases (channel-vector kernel, vectors along the input
// channels).  Not 1x1: 3 of its 4 stride-2 phases get no tap, and im2col measured faster.
template <class T>
bool cv_dx_strided_ok(const ConvShape& p) {
  constexpr int VW = DirectVec<T>::width;
  const int64_t KP = (p.Cg() + VW - 1) / VW * VW;
  return (p.stride_h > 1 || p.stride_w > 1) && p.dil_h == 1 && p.dil_w == 1 && p.R * p.S > 1 &&
         !is_depthwise(p) && 4 * p.Cg() >= 3 * KP;
}

// ---- entry points of the families ------------------------------------------------------------
// g below is the output gradient already through the activation's derivative.
// im2col + GEMM (conv_im2col.cpp)
template <class T> int64_t band_images(const ConvShape& p, int nt);  // images per band (1: per image)
template <class T> void conv_forward_image(const ConvArgs<T>& a, int64_t n);
template <class T> void conv_forward_images(const ConvArgs<T>& a, int64_t n0, int64_t imgs);
template <class T> void conv_backward_image(const ConvArgs<T>& a, int64_t n, T* dw_part, T* db_part);
template <class T> void conv_backward_images(const ConvArgs<T>& a, int64_t n0, int64_t imgs, T* dw_part, T* db_part);
// depthwise (conv_depthwise.cpp)
template <class T> void dw_forward_plane(const ConvArgs<T>& a, int64_t n, int64_t k);
template <class T> void dw_backward_plane(const ConvArgs<T>& a, int64_t n, int64_t c, T* dw_part, T* db_part);
// direct (conv_direct.cpp)
template <class T> void direct_forward(const ConvArgs<T>& a);
template <class T> void direct_weight_grad(const ConvArgs<T>& a, const T* g);
template <class T> void direct_input_grad(const ConvArgs<T>& a, const T* g);  // when direct_dx_ok
// The input planes of group g of image n into the zero-bordered scratch [Cg, HP, WP] (the image at
// row pad_h, column pad_w); interior_only: the border is already zero, only the image rows are copied.
template <class T>
void direct_pad_input(const ConvShape& p, const T* x, int64_t n, int64_t g, T* xpad, int64_t HP, int64_t WP,
                      bool interior_only = false);
// channel-vector (conv_channel_vector.cpp)
template <class T> void cv_forward(const ConvArgs<T>& a);
template <class T> void cv_weight_grad(const ConvArgs<T>& a, const T* g);
template <class T> void cv_input_grad_strided(const ConvArgs<T>& a, const T* g);  // when cv_dx_strided_ok

}  // namespace conv
}  // namespace FL_ISA_NS
}  // namespace fl
