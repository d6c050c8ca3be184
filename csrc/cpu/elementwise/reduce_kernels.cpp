// Fused passes over a list of tensors used by the gradient utilities:
// sum of squares (for norms, accumulated in double), max |x|, non-finite
// detection, scaling and clamping.  Compiled once per instruction set.
#include <cmath>
#include <type_traits>
#include "cpu/isa_entry.h"
#include "cpu/team.h"
#include "kernels/vec.h"

namespace fl {
namespace FL_ISA_NS {
namespace {

constexpr int kMaxThreads = 256;

// Reduce with per-thread partials; seg(ptr, n) returns the partial of one piece.
template <class T, class Seg, class Combine>
double reduce_list(const FlatList& l, double init, Seg&& seg, Combine&& comb) {
  double part[kMaxThreads];
  for (int i = 0; i < kMaxThreads; ++i) part[i] = init;
  parallel_ranges(l.offsets[l.count], [&](int tid, int64_t lo, int64_t hi) {
    double acc = init;
    for_each_segment(l, lo, hi, [&](int64_t t, int64_t b, int64_t e) {
      acc = comb(acc, seg(static_cast<const T*>(l.stream[0][t]) + b, e - b));
    });
    part[tid % kMaxThreads] = comb(part[tid % kMaxThreads], acc);
  });
  double r = init;
  for (int i = 0; i < kMaxThreads; ++i) r = comb(r, part[i]);
  return r;
}

template <class T>
double sumsq_seg(const T* x, int64_t n) {
  double acc = 0;
  int64_t i = 0;
#ifdef FL_HAVE_SIMD
  if constexpr (std::is_same_v<T, float>) {
    // float squares summed in blocks, each block flushed to double: a square
    // overflows float only above ~1.8e19, where we fall back below.
    using O = SimdOps;
    using V = typename O::V;
    constexpr int64_t kBlock = 1024;
    while (i + 4 * O::width <= n) {
      V a0(0.0f), a1(0.0f), a2(0.0f), a3(0.0f);
      const int64_t end = (n - i > kBlock ? i + kBlock : n) - 4 * O::width;
      for (; i <= end; i += 4 * O::width) {
        V x0 = O::load(x + i), x1 = O::load(x + i + O::width);
        V x2 = O::load(x + i + 2 * O::width), x3 = O::load(x + i + 3 * O::width);
        a0 = a0 + x0 * x0; a1 = a1 + x1 * x1; a2 = a2 + x2 * x2; a3 = a3 + x3 * x3;
      }
      acc += double(O::hsum((a0 + a1) + (a2 + a3)));
    }
    if (!std::isfinite(acc)) {  // overflow or non-finite input: redo exactly in double
      acc = 0;
      for (int64_t j = 0; j < i; ++j) acc += double(x[j]) * double(x[j]);
    }
  }
#endif
  for (; i < n; ++i) acc += double(x[i]) * double(x[i]);
  return acc;
}

template <class T>
double absmax_seg(const T* x, int64_t n) {
  double m = 0;
  for (int64_t i = 0; i < n; ++i) {
    double a = std::fabs(double(x[i]));
    if (!(a <= m)) m = a;  // NaN sticks
    if (std::isnan(m)) return m;
  }
  return m;
}

template <class T>
double nonfinite_seg(const T* x, int64_t n) {
  int64_t i = 0;
  T z = 0;
#ifdef FL_HAVE_SIMD
  if constexpr (std::is_same_v<T, float>) {
    using O = SimdOps;
    using V = typename O::V;
    V a0(0.0f), a1(0.0f);
    for (; i + 2 * O::width <= n; i += 2 * O::width) {
      a0 = a0 + O::load(x + i) * V(0.0f);  // x*0 is NaN exactly when x is NaN or Inf
      a1 = a1 + O::load(x + i + O::width) * V(0.0f);
    }
    z = O::hsum(a0 + a1);
  }
#endif
  for (; i < n; ++i) z += x[i] * T(0);
  return z == T(0) ? 0.0 : 1.0;
}

template <class T>
double sumsq_list(const FlatList& l) {
  return reduce_list<T>(l, 0.0, sumsq_seg<T>, [](double a, double b) { return a + b; });
}
template <class T>
double absmax_list(const FlatList& l) {
  return reduce_list<T>(l, 0.0, absmax_seg<T>, [](double a, double b) {
    return (std::isnan(a) || std::isnan(b)) ? NAN : (a > b ? a : b);
  });
}
template <class T>
double nonfinite_list(const FlatList& l) {
  return reduce_list<T>(l, 0.0, nonfinite_seg<T>, [](double a, double b) { return a + b; });
}

template <class T, class F>
void map_list(const FlatList& l, F&& f) {
  parallel_ranges(l.offsets[l.count], [&](int, int64_t lo, int64_t hi) {
    for_each_segment(l, lo, hi, [&](int64_t t, int64_t b, int64_t e) {
      T* x = static_cast<T*>(l.stream[0][t]);
      for (int64_t i = b; i < e; ++i) x[i] = f(x[i]);
    });
  });
}
template <class T>
void scale_list(const FlatList& l, double a, double) {
  const T s = T(a);
  map_list<T>(l, [s](T x) { return x * s; });
}
template <class T>
void clamp_list(const FlatList& l, double lo, double hi) {
  const T a = T(lo), b = T(hi);
  // NaN propagates (as torch.clamp): comparisons with NaN are false.
  map_list<T>(l, [a, b](T x) { return x < a ? a : (x > b ? b : x); });
}

}  // namespace

void fill_elementwise_kernels(CpuKernels& k) {
  k.sumsq[0] = &sumsq_list<float>;     k.sumsq[1] = &sumsq_list<double>;
  k.absmax[0] = &absmax_list<float>;   k.absmax[1] = &absmax_list<double>;
  k.nonfinite[0] = &nonfinite_list<float>; k.nonfinite[1] = &nonfinite_list<double>;
  k.scale[0] = &scale_list<float>;     k.scale[1] = &scale_list<double>;
  k.clamp[0] = &clamp_list<float>;     k.clamp[1] = &clamp_list<double>;
}

}  // namespace FL_ISA_NS
}  // namespace fl
