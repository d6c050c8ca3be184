// Register-blocked SGEMM micro-kernels, one per instruction set.  Included by
// cpu/gemm/gemm_kernels.cpp only, which is compiled once per ISA: the
// translation unit's flags pick exactly one `MicroKernel` below.
//
// Contract of MicroKernel::run_rows<R>(kc, A, B, C, ldc, alpha, beta, ep), R <= MR
// (run_m(rows, ...) picks R at run time):
//   A: packed micro-panel of MR rows,    A[k * MR + i] = op(A)(i, k)
//   B: packed micro-panel of NR columns, B[k * NR + j] = op(B)(k, j)
//   C(i, j) = alpha * sum_k A(i, k) B(k, j) + beta * C(i, j)   for i < R, j < NR;
//   beta == 0: C is not read (it may hold NaN).
// Both panels are 64-byte aligned (the packing buffers are), so aligned loads
// are used on B; C may be anywhere (unaligned loads/stores).
#pragma once
#include <cstdint>
#if (defined(__AVX2__) || defined(__AVX512F__))
#include <immintrin.h>
#endif
#include "core/macros.h"

namespace fl {
namespace FL_ISA_NS {

// What the micro-kernel may apply itself as it stores the last KC block of a
// full tile: C(i, j) += bias[j], then max(C, 0) when relu (everything else
// runs as a separate epilogue pass over the tile).
struct TileEpilogue {
  const float* bias_col = nullptr;
  bool relu = false;
};

#if defined(__AVX512F__)
// ---- AVX-512: 12 x 32 ---------------------------------------------------------
// Tested and measured on Intel Sapphire Rapids (the development machine since
// 2026-12; its tests run wherever the CPU has AVX-512F).
//
// Why 12 x 32: 24 zmm accumulators + 2 zmm for the B row + 1 broadcast = 27
// of the 32 architectural registers.  Each k step issues 24 independent FMAs
// against 2 vector loads and 12 broadcasts, enough to cover 2 FMA pipes x
// 4-cycle latency (8 FMAs in flight) three times over, and the
// flops-per-load ratio (24 FMAs / 14 loads) keeps the load ports below the
// FMA ports.  14 x 32 (28 accumulators) would squeeze out slightly more, but
// 12 divides the common sizes (48, 96, 192, 384, ...) and leaves registers for
// the compiler to software-pipeline the B loads.  This is the shape BLIS uses
// for SKX (its 32 x 12 column-major kernel, transposed).
struct MicroKernel {
  static constexpr int MR = 12, NR = 32;
  // Measured on Intel Sapphire Rapids (48 KiB L1d, 2 MiB L2): the micro-kernel
  // alone runs at ~99 % of the FMA peak with its B micro-panel (NR x KC) in L1
  // or streaming from L2 alike, so KC is set by what it amortises, not by L1:
  // each KC block loads and stores the whole C tile, whose 12 rows (ldc apart,
  // often a power of two) fall into one or two L1 sets and come back from L2.
  // KC = 512 (B micro-panel 64 KiB, from L2; A block MC x KC = 480 KiB in L2)
  // took 2048^3 from ~155-160 to ~172-180 GFLOP/s at 1 thread against
  // KC = 192 in interleaved runs; MC = 240 keeps that A block at a quarter of
  // L2.  The small-M driver's packed-B groups get 512 KiB (a quarter of L2).
  static constexpr int64_t MC = 240, KC = 512, NC = 3072, GROUP_KIB = 512;

  template <int R>
  static void run_rows(int64_t kc, const float* __restrict A, const float* __restrict B, float* C, int64_t ldc,
                       float alpha, float beta, TileEpilogue ep = {}) {
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
      const __m512 b0 = _mm512_load_ps(B), b1 = _mm512_load_ps(B + 16);
      _mm_prefetch(reinterpret_cast<const char*>(B + 8 * NR), _MM_HINT_T0);
#pragma GCC unroll 12
      for (int i = 0; i < R; ++i) {
        const __m512 a = _mm512_set1_ps(A[i]);
        acc[i][0] = _mm512_fmadd_ps(a, b0, acc[i][0]);
        acc[i][1] = _mm512_fmadd_ps(a, b1, acc[i][1]);
      }
      A += MR;
      B += NR;
    }
    const __m512 va = _mm512_set1_ps(alpha);
    if (ep.bias_col || ep.relu) {  // alpha AB + beta C + bias, relu: the fused Linear's last block
      const __m512 bz = _mm512_setzero_ps();
      const __m512 bb0 = ep.bias_col ? _mm512_loadu_ps(ep.bias_col) : bz;
      const __m512 bb1 = ep.bias_col ? _mm512_loadu_ps(ep.bias_col + 16) : bz;
      const __m512 vb = _mm512_set1_ps(beta);
#pragma GCC unroll 12
      for (int i = 0; i < R; ++i) {
        __m512 c0 = _mm512_fmadd_ps(va, acc[i][0], bb0), c1 = _mm512_fmadd_ps(va, acc[i][1], bb1);
        if (beta != 0.0f) {
          c0 = _mm512_fmadd_ps(vb, _mm512_loadu_ps(C + i * ldc), c0);
          c1 = _mm512_fmadd_ps(vb, _mm512_loadu_ps(C + i * ldc + 16), c1);
        }
        if (ep.relu) {  // max(NaN, 0) is 0, as the epilogue pass's v > 0 ? v : 0
          c0 = _mm512_max_ps(c0, bz);
          c1 = _mm512_max_ps(c1, bz);
        }
        _mm512_storeu_ps(C + i * ldc, c0);
        _mm512_storeu_ps(C + i * ldc + 16, c1);
      }
    } else if (beta == 0.0f) {
#pragma GCC unroll 12
      for (int i = 0; i < R; ++i) {
        _mm512_storeu_ps(C + i * ldc, _mm512_mul_ps(va, acc[i][0]));
        _mm512_storeu_ps(C + i * ldc + 16, _mm512_mul_ps(va, acc[i][1]));
      }
    } else if (beta == 1.0f) {
#pragma GCC unroll 12
      for (int i = 0; i < R; ++i) {
        _mm512_storeu_ps(C + i * ldc, _mm512_fmadd_ps(va, acc[i][0], _mm512_loadu_ps(C + i * ldc)));
        _mm512_storeu_ps(C + i * ldc + 16, _mm512_fmadd_ps(va, acc[i][1], _mm512_loadu_ps(C + i * ldc + 16)));
      }
    } else {
      const __m512 vb = _mm512_set1_ps(beta);
#pragma GCC unroll 12
      for (int i = 0; i < R; ++i) {
        _mm512_storeu_ps(C + i * ldc,
                         _mm512_fmadd_ps(va, acc[i][0], _mm512_mul_ps(vb, _mm512_loadu_ps(C + i * ldc))));
        _mm512_storeu_ps(C + i * ldc + 16,
                         _mm512_fmadd_ps(va, acc[i][1], _mm512_mul_ps(vb, _mm512_loadu_ps(C + i * ldc + 16))));
      }
    }
  }
  // The first `rows` rows of the tile (1 <= rows <= MR; the A panel keeps its
  // MR stride): the bottom edge of C without wasted rows or a copy.
  static void run_m(int rows, int64_t kc, const float* A, const float* B, float* C, int64_t ldc, float alpha,
                    float beta, TileEpilogue ep = {}) {
    switch (rows) {
      case 1: run_rows<1>(kc, A, B, C, ldc, alpha, beta, ep); break;
      case 2: run_rows<2>(kc, A, B, C, ldc, alpha, beta, ep); break;
      case 3: run_rows<3>(kc, A, B, C, ldc, alpha, beta, ep); break;
      case 4: run_rows<4>(kc, A, B, C, ldc, alpha, beta, ep); break;
      case 5: run_rows<5>(kc, A, B, C, ldc, alpha, beta, ep); break;
      case 6: run_rows<6>(kc, A, B, C, ldc, alpha, beta, ep); break;
      case 7: run_rows<7>(kc, A, B, C, ldc, alpha, beta, ep); break;
      case 8: run_rows<8>(kc, A, B, C, ldc, alpha, beta, ep); break;
      case 9: run_rows<9>(kc, A, B, C, ldc, alpha, beta, ep); break;
      case 10: run_rows<10>(kc, A, B, C, ldc, alpha, beta, ep); break;
      case 11: run_rows<11>(kc, A, B, C, ldc, alpha, beta, ep); break;
      default: run_rows<MR>(kc, A, B, C, ldc, alpha, beta, ep); break;
    }
  }
};

#elif defined(__AVX2__) && defined(__FMA__)
// ---- AVX2 + FMA: 6 x 16 -------------------------------------------------------
// 12 ymm accumulators + 2 for the B row + 1 broadcast = 15 of 16 registers.
// Per k step: 12 independent FMAs (2 FMA pipes x 4-5 cycle latency needs >= 10
// in flight) against 2 loads + 6 broadcasts from L1.
struct MicroKernel {
  static constexpr int MR = 6, NR = 16;
  // Zen 3: L1d 32 KiB holds the B micro-panel (16 x 256 x 4 B = 16 KiB) plus
  // the A micro-panel streaming through (6 KiB); L2 512 KiB holds the packed
  // A block (144 x 256 x 4 B = 144 KiB, leaving room for B traffic and C);
  // the packed B panel (256 x 4080 x 4 B = 4 MiB) lives in the 32 MiB L3.
  static constexpr int64_t MC = 144, KC = 256, NC = 4080, GROUP_KIB = 256;

  template <int R>
  static void run_rows(int64_t kc, const float* __restrict A, const float* __restrict B, float* C, int64_t ldc,
                       float alpha, float beta, TileEpilogue ep = {}) {
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
#pragma GCC unroll 6
      for (int i = 0; i < R; ++i) {
        const __m256 a = _mm256_broadcast_ss(A + i);
        acc[i][0] = _mm256_fmadd_ps(a, b0, acc[i][0]);
        acc[i][1] = _mm256_fmadd_ps(a, b1, acc[i][1]);
      }
      A += MR;
      B += NR;
    }
    const __m256 va = _mm256_set1_ps(alpha);
    if (ep.bias_col || ep.relu) {  // alpha AB + beta C + bias, relu: the fused Linear's last block
      const __m256 bz = _mm256_setzero_ps();
      const __m256 bb0 = ep.bias_col ? _mm256_loadu_ps(ep.bias_col) : bz;
      const __m256 bb1 = ep.bias_col ? _mm256_loadu_ps(ep.bias_col + 8) : bz;
      const __m256 vb = _mm256_set1_ps(beta);
#pragma GCC unroll 6
      for (int i = 0; i < R; ++i) {
        __m256 c0 = _mm256_fmadd_ps(va, acc[i][0], bb0), c1 = _mm256_fmadd_ps(va, acc[i][1], bb1);
        if (beta != 0.0f) {
          c0 = _mm256_fmadd_ps(vb, _mm256_loadu_ps(C + i * ldc), c0);
          c1 = _mm256_fmadd_ps(vb, _mm256_loadu_ps(C + i * ldc + 8), c1);
        }
        if (ep.relu) {  // max(NaN, 0) is 0, as the epilogue pass's v > 0 ? v : 0
          c0 = _mm256_max_ps(c0, bz);
          c1 = _mm256_max_ps(c1, bz);
        }
        _mm256_storeu_ps(C + i * ldc, c0);
        _mm256_storeu_ps(C + i * ldc + 8, c1);
      }
    } else if (beta == 0.0f) {
#pragma GCC unroll 6
      for (int i = 0; i < R; ++i) {
        _mm256_storeu_ps(C + i * ldc, _mm256_mul_ps(va, acc[i][0]));
        _mm256_storeu_ps(C + i * ldc + 8, _mm256_mul_ps(va, acc[i][1]));
      }
    } else if (beta == 1.0f) {
#pragma GCC unroll 6
      for (int i = 0; i < R; ++i) {
        _mm256_storeu_ps(C + i * ldc, _mm256_fmadd_ps(va, acc[i][0], _mm256_loadu_ps(C + i * ldc)));
        _mm256_storeu_ps(C + i * ldc + 8, _mm256_fmadd_ps(va, acc[i][1], _mm256_loadu_ps(C + i * ldc + 8)));
      }
    } else {
      const __m256 vb = _mm256_set1_ps(beta);
#pragma GCC unroll 6
      for (int i = 0; i < R; ++i) {
        _mm256_storeu_ps(C + i * ldc,
                         _mm256_fmadd_ps(va, acc[i][0], _mm256_mul_ps(vb, _mm256_loadu_ps(C + i * ldc))));
        _mm256_storeu_ps(C + i * ldc + 8,
                         _mm256_fmadd_ps(va, acc[i][1], _mm256_mul_ps(vb, _mm256_loadu_ps(C + i * ldc + 8))));
      }
    }
  }
  // The first `rows` rows of the tile (1 <= rows <= MR; the A panel keeps its
  // MR stride): the bottom edge of C without wasted rows or a copy.
  static void run_m(int rows, int64_t kc, const float* A, const float* B, float* C, int64_t ldc, float alpha,
                    float beta, TileEpilogue ep = {}) {
    switch (rows) {
      case 1: run_rows<1>(kc, A, B, C, ldc, alpha, beta, ep); break;
      case 2: run_rows<2>(kc, A, B, C, ldc, alpha, beta, ep); break;
      case 3: run_rows<3>(kc, A, B, C, ldc, alpha, beta, ep); break;
      case 4: run_rows<4>(kc, A, B, C, ldc, alpha, beta, ep); break;
      case 5: run_rows<5>(kc, A, B, C, ldc, alpha, beta, ep); break;
      default: run_rows<MR>(kc, A, B, C, ldc, alpha, beta, ep); break;
    }
  }
};

#else
// ---- scalar build: 4 x 8 in plain C++ -----------------------------------------
// The baseline x86-64 build has SSE2, which the compiler uses for these loops
// (8 xmm accumulators); elsewhere it is portable C++.
struct MicroKernel {
  static constexpr int MR = 4, NR = 8;
  static constexpr int64_t MC = 128, KC = 256, NC = 2048, GROUP_KIB = 256;

  template <int R>
  static void run_rows(int64_t kc, const float* __restrict A, const float* __restrict B, float* C, int64_t ldc,
                       float alpha, float beta, TileEpilogue ep = {}) {
    float acc[R][NR] = {};
    for (int64_t k = 0; k < kc; ++k) {
      for (int i = 0; i < R; ++i) {
        const float a = A[i];
        for (int j = 0; j < NR; ++j) acc[i][j] += a * B[j];
      }
      A += MR;
      B += NR;
    }
    for (int i = 0; i < R; ++i) {
      float* c = C + i * ldc;
      if (beta == 0.0f) {
        for (int j = 0; j < NR; ++j) c[j] = alpha * acc[i][j];
      } else {
        for (int j = 0; j < NR; ++j) c[j] = alpha * acc[i][j] + beta * c[j];
      }
      if (ep.bias_col)
        for (int j = 0; j < NR; ++j) c[j] += ep.bias_col[j];
      if (ep.relu)
        for (int j = 0; j < NR; ++j) c[j] = c[j] > 0.0f ? c[j] : 0.0f;
    }
  }
  // The first `rows` rows of the tile (1 <= rows <= MR; the A panel keeps its
  // MR stride): the bottom edge of C without wasted rows or a copy.
  static void run_m(int rows, int64_t kc, const float* A, const float* B, float* C, int64_t ldc, float alpha,
                    float beta, TileEpilogue ep = {}) {
    switch (rows) {
      case 1: run_rows<1>(kc, A, B, C, ldc, alpha, beta, ep); break;
      case 2: run_rows<2>(kc, A, B, C, ldc, alpha, beta, ep); break;
      case 3: run_rows<3>(kc, A, B, C, ldc, alpha, beta, ep); break;
      default: run_rows<MR>(kc, A, B, C, ldc, alpha, beta, ep); break;
    }
  }
};
#endif

}  // namespace FL_ISA_NS
}  // namespace fl
