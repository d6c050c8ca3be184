// The AVX2 + FMA SGEMM micro-kernel: a 6 x 16 tile of C in 12 ymm registers.
// Contract: cpu/gemm/gemm_micro.h.  Included only by translation units
// compiled with AVX2 and FMA (the avx2 build).
//
// Why 6 x 16: 12 ymm accumulators + 2 for the B row + 1 broadcast = 15 of 16
// registers.  Per k step: 12 independent FMAs (2 FMA pipes x 4-5 cycle
// latency needs >= 10 in flight) against 2 loads + 6 broadcasts from L1; the
// shape of BLIS's bli_sgemm_haswell_asm_6x16.  Cache blocking: cpu/tuning.h.
#pragma once
#include <immintrin.h>

#include <cstdint>

#include "core/macros.h"
#include "cpu/gemm/micro_tile.h"
#include "cpu/tuning.h"

namespace fl {
namespace FL_ISA_NS {

struct Avx2Lanes {
  using reg = __m256;
  static constexpr int W = 8;
  static FL_HD reg load(const float* p) { return _mm256_loadu_ps(p); }
  static FL_HD void store(float* p, reg x) { _mm256_storeu_ps(p, x); }
  static FL_HD reg fma(reg a, reg b, reg c) { return _mm256_fmadd_ps(a, b, c); }
  static FL_HD reg mul(reg a, reg b) { return _mm256_mul_ps(a, b); }
  static FL_HD reg max(reg a, reg b) { return _mm256_max_ps(a, b); }
  static FL_HD reg set1(float x) { return _mm256_set1_ps(x); }
  static FL_HD reg zero() { return _mm256_setzero_ps(); }
};

struct MicroAvx2_6x16 {
  static constexpr int MR = 6, NR = 16;

  template <int R>
  static void run_rows(int64_t kc, const float* __restrict A, const float* __restrict B, float* C, int64_t ldc,
                       float alpha, float beta, TileEpilogue ep = {}) {
    static_assert(R >= 1 && R <= MR, "rows of the tile");
    constexpr int kAhead = tuning::Gemm::B_AHEAD;
    __m256 acc[R][2];
#pragma GCC unroll 6
    for (int i = 0; i < R; ++i) {  // the C tile arrives while the k loop runs
      _mm_prefetch(reinterpret_cast<const char*>(C + i * ldc), _MM_HINT_T0);
      _mm_prefetch(reinterpret_cast<const char*>(C + i * ldc + NR - 1), _MM_HINT_T0);
    }
#pragma GCC unroll 6
    for (int i = 0; i < R; ++i) {
      acc[i][0] = _mm256_setzero_ps();
      acc[i][1] = _mm256_setzero_ps();
    }
#pragma GCC unroll 4
    for (int64_t k = 0; k < kc; ++k) {
      const __m256 b0 = _mm256_load_ps(B), b1 = _mm256_load_ps(B + 8);
      if constexpr (kAhead > 0) _mm_prefetch(reinterpret_cast<const char*>(B + kAhead * NR), _MM_HINT_T0);
#pragma GCC unroll 6
      for (int i = 0; i < R; ++i) {
        const __m256 a = _mm256_broadcast_ss(A + i);
        acc[i][0] = _mm256_fmadd_ps(a, b0, acc[i][0]);
        acc[i][1] = _mm256_fmadd_ps(a, b1, acc[i][1]);
      }
      A += MR;
      B += NR;
    }
    store_tile<Avx2Lanes, R, 2>(acc, C, ldc, alpha, beta, ep);
  }
  static void run_m(int rows, int64_t kc, const float* A, const float* B, float* C, int64_t ldc, float alpha,
                    float beta, TileEpilogue ep = {}) {
    run_rows_of<MicroAvx2_6x16>(rows, kc, A, B, C, ldc, alpha, beta, ep);
  }
};

}  // namespace FL_ISA_NS
}  // namespace fl
