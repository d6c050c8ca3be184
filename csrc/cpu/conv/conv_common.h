// Helpers shared by the convolution kernels (conv_kernels.cpp) and the pooling
// and batch-norm kernels (pool_norm_kernels.cpp): per-thread workspaces, the
// thread team, the GEMM of this build's table, activations and their
// gradients, lane-parallel sums.  Included by translation units compiled once
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
#include "cpu/isa_entry.h"
#include "cpu/team.h"

namespace fl {
namespace FL_ISA_NS {
namespace conv_common {

// ---- per-thread workspaces, grown on demand and reused across calls -------------------
// 64-byte aligned (vector loads of rows a multiple of 64 bytes apart then never split a line).
template <class T>
inline T* align64(T* p) {
  return reinterpret_cast<T*>((reinterpret_cast<uintptr_t>(p) + 63) & ~uintptr_t(63));
}
template <class T>
T* workspace(int slot, size_t n) {
  thread_local std::vector<T> bufs[8];
  std::vector<T>& b = bufs[slot];
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
template <class T>
inline T act_apply(Activation a, T v) {
  switch (a) {
    case Activation::relu: return v > T(0) ? v : T(0);
    case Activation::tanh: return std::tanh(v);
    case Activation::sigmoid: return T(1) / (T(1) + std::exp(-v));
    default: return v;
  }
}
// y = act(y) in place (the switch outside the loops, which then vectorise).
template <class T>
void act_inplace(Activation a, T* __restrict y, int64_t n) {
  switch (a) {
    case Activation::relu:
      for (int64_t i = 0; i < n; ++i) y[i] = y[i] > T(0) ? y[i] : T(0);
      break;
    case Activation::tanh:
      for (int64_t i = 0; i < n; ++i) y[i] = std::tanh(y[i]);
      break;
    case Activation::sigmoid:
      for (int64_t i = 0; i < n; ++i) y[i] = T(1) / (T(1) + std::exp(-y[i]));
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
