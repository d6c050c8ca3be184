// The portable SGEMM micro-kernel of the scalar build: a 4 x 8 tile of C in
// plain C++.  Contract: cpu/gemm/gemm_micro.h.  The baseline x86-64 build has
// SSE2, which the compiler uses for these loops (8 xmm accumulators);
// elsewhere it is portable C++.  Cache blocking: cpu/tuning.h.
#pragma once
#include <cstdint>

#include "core/macros.h"
#include "cpu/gemm/micro_tile.h"

namespace fl {
namespace FL_ISA_NS {

// One float per "register": fma is a * b + c rounded twice (the scalar build
// has no FMA instruction), max(NaN, 0) is 0 as with _mm_max_ps.
struct ScalarLanes {
  using reg = float;
  static constexpr int W = 1;
  static FL_HD reg load(const float* p) { return *p; }
  static FL_HD void store(float* p, reg x) { *p = x; }
  static FL_HD reg fma(reg a, reg b, reg c) { return a * b + c; }
  static FL_HD reg mul(reg a, reg b) { return a * b; }
  static FL_HD reg max(reg a, reg b) { return a > b ? a : b; }
  static FL_HD reg set1(float x) { return x; }
  static FL_HD reg zero() { return 0.0f; }
};

struct MicroScalar_4x8 {
  static constexpr int MR = 4, NR = 8;

  template <int R>
  static void run_rows(int64_t kc, const float* __restrict A, const float* __restrict B, float* C, int64_t ldc,
                       float alpha, float beta, TileEpilogue ep = {}) {
    static_assert(R >= 1 && R <= MR, "rows of the tile");
    float acc[R][NR] = {};
    for (int64_t k = 0; k < kc; ++k) {
      for (int i = 0; i < R; ++i) {
        const float a = A[i];
        for (int j = 0; j < NR; ++j) acc[i][j] += a * B[j];
      }
      A += MR;
      B += NR;
    }
    store_tile<ScalarLanes, R, NR>(acc, C, ldc, alpha, beta, ep);
  }
  static void run_m(int rows, int64_t kc, const float* A, const float* B, float* C, int64_t ldc, float alpha,
                    float beta, TileEpilogue ep = {}) {
    run_rows_of<MicroScalar_4x8>(rows, kc, A, B, C, ldc, alpha, beta, ep);
  }
};

}  // namespace FL_ISA_NS
}  // namespace fl
