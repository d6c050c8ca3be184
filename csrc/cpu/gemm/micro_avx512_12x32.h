// The AVX-512 SGEMM micro-kernel: a 12 x 32 tile of C in 24 zmm registers.
// Contract: cpu/gemm/gemm_micro.h.  Included only by translation units
// compiled with AVX-512F (the avx512 build).
//
// Why 12 x 32: 24 zmm accumulators + 2 zmm for the B row + 1 broadcast = 27
// of the 32 architectural registers.  Each k step issues 24 independent FMAs
// against 2 vector loads and 12 broadcasts, enough to cover 2 FMA pipes x
// 4-cycle latency (8 FMAs in flight) three times over, and the
// flops-per-load ratio (24 FMAs / 14 loads) keeps the load ports below the
// FMA ports.  14 x 32 (28 accumulators) would squeeze out slightly more, but
// 12 divides the common sizes (48, 96, 192, 384, ...) and leaves registers for
// the compiler to software-pipeline the B loads.  This is the shape BLIS uses
// for SKX (its 32 x 12 column-major kernel, transposed).  Cache blocking:
// cpu/tuning.h (tuning::Gemm).
#pragma once
#include <immintrin.h>

#include <cstdint>

#include "core/macros.h"
#include "cpu/gemm/micro_tile.h"
#include "cpu/tuning.h"

namespace fl {
namespace FL_ISA_NS {

struct Avx512Lanes {
  using reg = __m512;
  static constexpr int W = 16;
  static FL_HD reg load(const float* p) { return _mm512_loadu_ps(p); }
  static FL_HD void store(float* p, reg x) { _mm512_storeu_ps(p, x); }
  static FL_HD reg fma(reg a, reg b, reg c) { return _mm512_fmadd_ps(a, b, c); }
  static FL_HD reg mul(reg a, reg b) { return _mm512_mul_ps(a, b); }
  static FL_HD reg max(reg a, reg b) { return _mm512_max_ps(a, b); }
  static FL_HD reg set1(float x) { return _mm512_set1_ps(x); }
  static FL_HD reg zero() { return _mm512_setzero_ps(); }
};

struct MicroAvx512_12x32 {
  static constexpr int MR = 12, NR = 32;

  template <int R>
  static void run_rows(int64_t kc, const float* __restrict A, const float* __restrict B, float* C, int64_t ldc,
                       float alpha, float beta, TileEpilogue ep = {}) {
    static_assert(R >= 1 && R <= MR, "rows of the tile");
    constexpr int kAhead = tuning::Gemm::B_AHEAD;
    __m512 acc[R][2];
#pragma GCC unroll 12
    for (int i = 0; i < R; ++i) {  // the C tile arrives while the k loop runs
      _mm_prefetch(reinterpret_cast<const char*>(C + i * ldc), _MM_HINT_T0);
      _mm_prefetch(reinterpret_cast<const char*>(C + i * ldc + NR - 1), _MM_HINT_T0);
    }
#pragma GCC unroll 12
    for (int i = 0; i < R; ++i) {
      acc[i][0] = _mm512_setzero_ps();
      acc[i][1] = _mm512_setzero_ps();
    }
#pragma GCC unroll 2
    for (int64_t k = 0; k < kc; ++k) {
      __m512 b0 = _mm512_load_ps(B), b1 = _mm512_load_ps(B + 16);
      // b0, b1 in registers: without this GCC 12 spilled b0 to the stack and
      // read it back for 24 FMAs per k step, ~10 % of the kernel (bench/RESULTS.md [gemm-avx512-spill])
      asm("" : "+v"(b0), "+v"(b1));
      if constexpr (kAhead > 0) _mm_prefetch(reinterpret_cast<const char*>(B + kAhead * NR), _MM_HINT_T0);
#pragma GCC unroll 12
      for (int i = 0; i < R; ++i) {
        const __m512 a = _mm512_set1_ps(A[i]);
        acc[i][0] = _mm512_fmadd_ps(a, b0, acc[i][0]);
        acc[i][1] = _mm512_fmadd_ps(a, b1, acc[i][1]);
      }
      A += MR;
      B += NR;
    }
    store_tile<Avx512Lanes, R, 2>(acc, C, ldc, alpha, beta, ep);
  }
  static void run_m(int rows, int64_t kc, const float* A, const float* B, float* C, int64_t ldc, float alpha,
                    float beta, TileEpilogue ep = {}) {
    run_rows_of<MicroAvx512_12x32>(rows, kc, A, B, C, ldc, alpha, beta, ep);
  }
};

}  // namespace FL_ISA_NS
}  // namespace fl
