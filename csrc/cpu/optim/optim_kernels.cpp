// The fused multi-tensor optimizer step: one pass over memory applying a rule
// (optim_rules.h) to every element of every tensor of a list.  Compiled once
// per instruction set (FL_ISA_NS names the build).
#include <type_traits>
#include "cpu/isa_entry.h"
#include "cpu/optim/optim_rules.h"
#include "cpu/parallel_ranges.h"

namespace fl {
namespace FL_ISA_NS {
namespace {

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
    using O = SimdOps;
    using V = typename O::V;
    const Rule<V> rv(h);
    const V zero(0.0f);
    for (; i + O::width <= e; i += O::width) {
      V pv = O::load(p + i);
      V a = s0 ? O::load(s0 + i) : zero;
      V c = s1 ? O::load(s1 + i) : zero;
      V d = s2 ? O::load(s2 + i) : zero;
      rv(pv, O::load(g + i), a, c, d);
      O::store(p + i, pv);
      if (s0) O::store(s0 + i, a);
      if (s1) O::store(s1 + i, c);
      if (s2) O::store(s2 + i, d);
    }
  }
#endif
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
