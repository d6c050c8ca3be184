// The fused multi-tensor optimizer step: one pass over memory applying a rule
// (optim_rules.h) to every element of every tensor of a list.  Compiled once
// per instruction set (FL_ISA_NS names the build).
#include <type_traits>
#include "cpu/isa_entry.h"
#include "kernels/optim_rules.h"
#include "cpu/team.h"

namespace fl {
namespace FL_ISA_NS {
namespace {

// Software prefetch distance in elements (2 KiB ahead, one prefetch per line
// per stream): one core's hardware prefetchers keep few lines in flight for
// the four to five streams of a rule (bench/RESULTS.md, "Tuning notes"
// [optim-prefetch]).  Never exactly 4 KiB: with arrays sharing a page offset
// the prefetched line would land in the L1 set of the current one.
constexpr int64_t kPrefetch = 512;
FL_HD void prefetch_r(const void* a) { __builtin_prefetch(a, 0, 3); }
FL_HD void prefetch_w(const void* a) { __builtin_prefetch(a, 1, 3); }

template <class R, class T>
FL_HD void scalar_range(const R& rs, T* p, const T* g, T* s0, T* s1, T* s2, int64_t i, int64_t e) {
  for (; i < e; ++i) {
    T pv = p[i], a = s0 ? s0[i] : T(0), c = s1 ? s1[i] : T(0), d = s2 ? s2[i] : T(0);
    rs(pv, g[i], a, c, d);
    p[i] = pv;
    if (s0) s0[i] = a;
    if (s1) s1[i] = c;
    if (s2) s2[i] = d;
  }
}

template <template <class> class Rule, class H, class T>
void segment(const Rule<T>& rs, const H& h, const FlatList& l, int64_t t, int64_t b, int64_t e) {
  T* p = static_cast<T*>(l.stream[0][t]);
  const T* g = static_cast<const T*>(l.stream[1][t]);
  T* s0 = l.stream[2] ? static_cast<T*>(l.stream[2][t]) : nullptr;
  T* s1 = l.stream[3] ? static_cast<T*>(l.stream[3][t]) : nullptr;
  T* s2 = l.stream[4] ? static_cast<T*>(l.stream[4][t]) : nullptr;
  int64_t i = b;
#ifdef FL_HAVE_SIMD
  if constexpr (std::is_same_v<T, float>) {
    // Scalar head until the parameter stream is 64-byte aligned: arrays from
    // one allocator usually share their misalignment, so this aligns them all
    // and keeps vector loads from straddling cache lines.
    if (e - i >= 256) {
      const int64_t head = ((64 - int64_t(reinterpret_cast<uintptr_t>(p + i) & 63)) & 63) / int64_t(sizeof(T));
      scalar_range(rs, p, g, s0, s1, s2, i, i + head);
      i += head;
    }
    using O = SimdOps;
    using V = typename O::V;
    const Rule<V> rv(h);
    const V zero(0.0f);
    auto vec_at = [&](int64_t j) {
      V pv = O::load(p + j);
      V a = s0 ? O::load(s0 + j) : zero;
      V c = s1 ? O::load(s1 + j) : zero;
      V d = s2 ? O::load(s2 + j) : zero;
      rv(pv, O::load(g + j), a, c, d);
      O::store(p + j, pv);
      if (s0) O::store(s0 + j, a);
      if (s1) O::store(s1 + j, c);
      if (s2) O::store(s2 + j, d);
    };
    // One 64-byte line of every stream per iteration, with one prefetch each.
    constexpr int64_t kLine = 64 / sizeof(float);
    for (; i + kLine <= e; i += kLine) {
      prefetch_w(p + i + kPrefetch);
      prefetch_r(g + i + kPrefetch);
      if (s0) prefetch_w(s0 + i + kPrefetch);
      if (s1) prefetch_w(s1 + i + kPrefetch);
      if (s2) prefetch_w(s2 + i + kPrefetch);
      for (int64_t u = 0; u < kLine; u += O::width) vec_at(i + u);
    }
    for (; i + O::width <= e; i += O::width) vec_at(i);
  }
#endif
  scalar_range(rs, p, g, s0, s1, s2, i, e);
}

template <template <class> class Rule, class H, class T>
void run_rule(const void* hv, const FlatList& l) {
  const H& h = *static_cast<const H*>(hv);
  const Rule<T> rs(h);
  parallel_ranges(l.offsets[l.count], [&](int, int64_t lo, int64_t hi) {
    for_each_segment(l, lo, hi, [&](int64_t t, int64_t b, int64_t e) {
      segment<Rule, H, T>(rs, h, l, t, b, e);
    });
  });
}

}  // namespace

void fill_optim_kernels(CpuKernels& k) {
#define FL_FILL(name, R, H, S)                                   \
  k.optim[int(DType::f32)][kRule_##name] = &run_rule<R, H, float>; \
  k.optim[int(DType::f64)][kRule_##name] = &run_rule<R, H, double>;
  FL_OPTIM_RULES(FL_FILL)
#undef FL_FILL
}

}  // namespace FL_ISA_NS
}  // namespace fl
