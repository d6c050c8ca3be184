// Helpers shared by the convolution kernels (conv_*.cpp, conv2d.cpp) and the
// pooling and batch-norm kernels (pool_norm_kernels.cpp): per-thread scratch
// buffers named by role, the thread team, the GEMM of this build's table,
// activations (kernels/fast_math.h) and their gradients, lane-parallel sums.  Included by translation units compiled once
// per ISA: lives in FL_ISA_NS (one set of workspaces per instruction set).
#pragma once
#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <exception>
#include <vector>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "kernels/conv_args.h"
#include "kernels/fast_math.h"
#include "kernels/vec.h"
#include "cpu/isa_entry.h"
#include "cpu/team.h"

namespace fl {
namespace FL_ISA_NS {
namespace conv_common {

// ---- per-thread scratch buffers, grown on demand and reused across calls -------------
// One buffer per role and value type, per thread.  A kernel may hold several roles at once;
// two kernels share a buffer only where they fill the same role one after the other.
enum class Scratch : int {
  im2col_band,      // im2col columns of a band of output rows (or of several small images)
  col2im_band,      // dcol = w^T g of a band, scattered back by col2im
  image_act_grad,   // one image's (or plane's) g = dy * act'(y)
  batch_act_grad,   // the whole batch's g = dy * act'(y) (read by every thread of the team)
  thread_partials,  // a thread's dw / db sums, added up after the team's barrier
  band_outputs,     // several small images: the GEMM's y (or gathered g) [Kg, images * OH * OW]
  padded_input,     // zero-bordered input of the direct / channel-vector kernels (x, or g for dx)
  padded_grad,      // direct weight gradient: g of a channel block, zeros past OW
  channel_major,    // channel-vector tiles' [pixels, KP] buffer (y^T, g^T)
  phase_outputs,    // strided input gradient: one stride phase's dx as [Cg, pixels]
  count
};
// 64-byte aligned (vector loads of rows a multiple of 64 bytes apart then never split a line).
template <class T>
inline T* align64(T* p) {
  return reinterpret_cast<T*>((reinterpret_cast<uintptr_t>(p) + 63) & ~uintptr_t(63));
}
template <class T>
T* scratch(Scratch role, size_t n) {
  thread_local std::vector<T> bufs[int(Scratch::count)];
  std::vector<T>& b = bufs[int(role)];
  const size_t need = n + 64 / sizeof(T);
  if (b.size() < need) b.resize(need);
  return align64(b.data());
}
// v holds n zeros from the returned 64-byte aligned pointer on.
template <class T>
T* zeros64(std::vector<T>& v, size_t n) {
  v.assign(n + 64 / sizeof(T), T(0));
  return align64(v.data());
}

// ---- GEMM through this build's table ---------------------------------------------------
inline void gemm(const GemmArgs<float>& g) { kernels().sgemm(g); }
inline void gemm(const GemmArgs<double>& g) { kernels().dgemm(g); }

// ---- activations ---------------------------------------------------------------------------
// y = act(y) in place, tanh and sigmoid by kernels/fast_math.h: every convolution path (and the
// batch norm) applies its activation here, so one activation rounds the same way whichever
// kernel computed its input.  float with SIMD: every element goes through the vector function
// (a tail through a padded copy), so that a value's rounding does not depend on its position.
template <class F>
void act_map(float* __restrict y, int64_t n, F f) {
#if defined(FL_HAVE_SIMD)
  constexpr int VW = SimdOps::width;
  int64_t i = 0;
  for (; i + VW <= n; i += VW) SimdOps::store(y + i, f(SimdOps::load(y + i)));
  if (i < n) {
    float tmp[VW] = {};
    std::memcpy(tmp, y + i, size_t(n - i) * sizeof(float));
    SimdOps::store(tmp, f(SimdOps::load(tmp)));
    std::memcpy(y + i, tmp, size_t(n - i) * sizeof(float));
  }
#else
  for (int64_t i = 0; i < n; ++i) y[i] = f(y[i]);
#endif
}
template <class F>
void act_map(double* __restrict y, int64_t n, F f) {
  for (int64_t i = 0; i < n; ++i) y[i] = f(y[i]);
}
template <class T>
void act_inplace(Activation a, T* __restrict y, int64_t n) {
  switch (a) {
    case Activation::relu:
      for (int64_t i = 0; i < n; ++i) y[i] = y[i] > T(0) ? y[i] : T(0);
      break;
    case Activation::tanh:
      act_map(y, n, [](auto v) { return fast_tanh(v); });
      break;
    case Activation::sigmoid:
      act_map(y, n, [](auto v) { return fast_sigmoid(v); });
      break;
    default:
      break;
  }
}
// g * act'(pre) written through the output y = act(pre).
template <class T>
void act_grad(Activation a, const T* __restrict dy, const T* __restrict y, T* __restrict out, int64_t n) {
  switch (a) {
    case Activation::relu:
      for (int64_t i = 0; i < n; ++i) out[i] = y[i] > T(0) ? dy[i] : T(0);
      break;
    case Activation::tanh:
      for (int64_t i = 0; i < n; ++i) out[i] = dy[i] * (T(1) - y[i] * y[i]);
      break;
    case Activation::sigmoid:
      for (int64_t i = 0; i < n; ++i) out[i] = dy[i] * y[i] * (T(1) - y[i]);
      break;
    default:
      std::memcpy(out, dy, size_t(n) * sizeof(T));
  }
}

// Sum of n values in 16 independent lanes (the compiler vectorises this
// without reassociating a single accumulator), finished in double.
template <class T>
double lane_sum(const T* __restrict a, int64_t n) {
  T acc[16] = {};
  int64_t i = 0;
  for (; i + 16 <= n; i += 16)
    for (int j = 0; j < 16; ++j) acc[j] += a[i + j];
  double s = 0;
  for (int j = 0; j < 16; ++j) s += double(acc[j]);
  for (; i < n; ++i) s += double(a[i]);
  return s;
}
// sum a * (b - mb), lanes as above
template <class T>
double lane_dot_centered(const T* __restrict a, const T* __restrict b, T mb, int64_t n) {
  T acc[16] = {};
  int64_t i = 0;
  for (; i + 16 <= n; i += 16)
    for (int j = 0; j < 16; ++j) acc[j] += a[i + j] * (b[i + j] - mb);
  double s = 0;
  for (int j = 0; j < 16; ++j) s += double(acc[j]);
  for (; i < n; ++i) s += double(a[i]) * (double(b[i]) - double(mb));
  return s;
}
// sum (a - m)^2
template <class T>
double lane_sq_centered(const T* __restrict a, T m, int64_t n) {
  T acc[16] = {};
  int64_t i = 0;
  for (; i + 16 <= n; i += 16)
    for (int j = 0; j < 16; ++j) acc[j] += (a[i + j] - m) * (a[i + j] - m);
  double s = 0;
  for (int j = 0; j < 16; ++j) s += double(acc[j]);
  for (; i < n; ++i) s += (double(a[i]) - double(m)) * (double(a[i]) - double(m));
  return s;
}
template <class T>
double lane_dot(const T* __restrict a, const T* __restrict b, int64_t n) {
  return lane_dot_centered(a, b, T(0), n);
}

// Output positions o in [lo, hi) whose input o*stride + off lies in [0, extent).
inline void valid_range(int64_t off, int64_t stride, int64_t extent, int64_t count, int64_t& lo, int64_t& hi) {
  lo = off >= 0 ? 0 : (-off + stride - 1) / stride;
  const int64_t last = extent - 1 - off;  // o*stride <= last
  hi = last < 0 ? 0 : std::min(count, last / stride + 1);
  if (lo > count) lo = count;
  if (hi < lo) hi = lo;
}

}  // namespace conv_common
}  // namespace FL_ISA_NS
}  // namespace fl
