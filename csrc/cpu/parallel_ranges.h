// Split a flat index space over OpenMP threads in contiguous, cache-line
// aligned ranges, and walk a range across the tensors of a FlatList.
#pragma once
#include <cstdint>
#include "core/macros.h"
#include "kernels/kernel_table.h"
#ifdef _OPENMP
#include <omp.h>
#endif

namespace fl {
namespace FL_ISA_NS {

// Below this many elements a second thread costs more than it saves.
constexpr int64_t kParallelGrain = 1 << 15;

// Calls body(thread_index, lo, hi) over a partition of [0, total).
template <class Body>
void parallel_ranges(int64_t total, Body&& body) {
#ifdef _OPENMP
  int nt = configured_threads();
  if (nt > 1 && total >= 2 * kParallelGrain && !omp_in_parallel()) {
    int64_t max_nt = total / kParallelGrain;
    if (nt > max_nt) nt = static_cast<int>(max_nt);
#pragma omp parallel num_threads(nt)
    {
      const int t = omp_get_thread_num(), n = omp_get_num_threads();
      auto split = [&](int k) -> int64_t {
        if (k >= n) return total;
        int64_t x = total / n * k + (total % n) * k / n;
        return x & ~int64_t(15);  // 64-byte boundaries for float
      };
      const int64_t lo = split(t), hi = split(t + 1);
      if (lo < hi) body(t, lo, hi);
    }
    return;
  }
#endif
  if (total > 0) body(0, int64_t(0), total);
}

// Calls seg(tensor, begin, end) for each tensor piece of the flat range [lo, hi).
template <class Seg>
void for_each_segment(const FlatList& l, int64_t lo, int64_t hi, Seg&& seg) {
  // binary search: last tensor t with offsets[t] <= lo
  int64_t a = 0, b = l.count;
  while (b - a > 1) {
    int64_t mid = (a + b) / 2;
    if (l.offsets[mid] <= lo) a = mid; else b = mid;
  }
  for (int64_t t = a; t < l.count && lo < hi; ++t) {
    const int64_t tb = l.offsets[t], te = l.offsets[t + 1];
    if (te <= lo) continue;
    const int64_t e = (hi < te ? hi : te);
    seg(t, lo - tb, e - tb);
    lo = e;
  }
}

}  // namespace FL_ISA_NS
}  // namespace fl
