// A 64-byte aligned float buffer, grown on demand and reused (per thread, as
// thread_local objects): the GEMM's packing buffers and the recurrent layers'
// packed weights.  Reuse spares each call the kernel's zeroing of fresh pages.
// In FL_ISA_NS like every header of the per-ISA translation units (no inline
// function compiled with one ISA's flags may be merged into another's build).
#pragma once
#include <cstddef>
#include <cstdlib>
#include <new>

#include "core/macros.h"

namespace fl {
namespace FL_ISA_NS {

struct AlignedBuf {
  float* p = nullptr;
  size_t n = 0;
  // at least `need` floats; the contents are kept only while no larger request came
  float* get(size_t need) {
    if (need > n) {
      std::free(p);
      const size_t bytes = (need * sizeof(float) + 63) & ~size_t(63);
      p = static_cast<float*>(std::aligned_alloc(64, bytes));
      if (!p) {
        n = 0;
        throw std::bad_alloc();
      }
      n = need;
    }
    return p;
  }
  AlignedBuf() = default;
  AlignedBuf(const AlignedBuf&) = delete;
  AlignedBuf& operator=(const AlignedBuf&) = delete;
  ~AlignedBuf() { std::free(p); }
};

}  // namespace FL_ISA_NS
}  // namespace fl
