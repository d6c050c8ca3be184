// The one threading helper of the CPU kernels: how many threads a piece of
// work gets (team_for), a team runner that never lets an exception escape an
// OpenMP region (run_team), and the flat-range split of the element-wise
// kernels (parallel_ranges) built on both.
//
// Grain policy, one rule for every kernel: work below two grains runs on one
// thread (waking a team costs more than it saves, far more on a loaded
// machine); above that, one thread per grain of work, at most one per item
// and at most the configured thread count; inside a parallel region, one.
#pragma once
#include <algorithm>
#include <atomic>
#include <cstdint>
#include <exception>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "core/macros.h"
#include "kernels/kernel_table.h"

namespace fl {
namespace FL_ISA_NS {

// Threads for `items` independent pieces of work (no grain: every item is big).
inline int team_size(int64_t items) {
#ifdef _OPENMP
  if (omp_in_parallel()) return 1;
  const int nt = configured_threads();
#else
  const int nt = 1;
#endif
  return int(std::max<int64_t>(1, std::min<int64_t>(nt, items)));
}

// Threads for `work` units (flops, elements) split over `items` pieces, where
// one thread pays for itself at `grain` units.
inline int team_for(int64_t items, double work, double grain) {
  if (work < 2.0 * grain) return 1;
  const double by_work = work / grain;
  const int nt = team_size(items);
  return by_work < double(nt) ? std::max(1, int(by_work)) : nt;
}

// Runs body(thread, nthreads) on nt threads (inline when nt <= 1); the first
// exception thrown by any thread is rethrown here after the team ends.
template <class Body>
void run_team(int nt, Body&& body) {
  if (nt <= 1) {
    body(0, 1);
    return;
  }
#ifdef _OPENMP
  std::exception_ptr err = nullptr;
  std::atomic<bool> failed{false};
#pragma omp parallel num_threads(nt)
  {
    try {
      body(omp_get_thread_num(), omp_get_num_threads());
    } catch (...) {
      if (!failed.exchange(true)) err = std::current_exception();
    }
  }
  if (err) std::rethrow_exception(err);
#else
  body(0, 1);
#endif
}

// For teams whose threads meet at barriers (the recurrent sequence drivers):
// guard(fn) runs fn and keeps the first exception of any thread; after a
// failure the others skip their work but still meet every barrier.  The
// caller calls rethrow() after the team ends.
struct TeamGuard {
  std::exception_ptr err = nullptr;
  std::atomic<bool> failed{false};
  template <class Fn>
  void operator()(Fn&& fn) {
    if (failed.load(std::memory_order_relaxed)) return;
    try {
      fn();
    } catch (...) {
      if (!failed.exchange(true)) err = std::current_exception();
    }
  }
  void rethrow() {
    if (err) std::rethrow_exception(err);
  }
};

// Element-wise kernels: one thread pays for itself at this many elements.
constexpr int64_t kParallelGrain = 1 << 15;

// Calls body(thread_index, lo, hi) over a partition of [0, total) into
// contiguous ranges starting on 64-byte boundaries (for float).
template <class Body>
void parallel_ranges(int64_t total, Body&& body) {
  if (total <= 0) return;
  const int nt = team_for(total, double(total), double(kParallelGrain));
  run_team(nt, [&](int t, int n) {
    auto split = [&](int k) -> int64_t {
      if (k >= n) return total;
      const int64_t x = total / n * k + (total % n) * k / n;
      return x & ~int64_t(15);
    };
    const int64_t lo = split(t), hi = split(t + 1);
    if (lo < hi) body(t, lo, hi);
  });
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
