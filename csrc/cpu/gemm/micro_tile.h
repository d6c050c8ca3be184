// What every GEMM micro-kernel shares: the store of its MR x NR tile of C
// from the accumulator registers (alpha, beta, and the bias / ReLU it may
// apply itself), written once over a "lanes" type, and the run-time choice of
// the row count.  The per-ISA kernels (micro_avx512_12x32.h, micro_avx2_6x16.h,
// micro_scalar_4x8.h) only hold their register blocking and k loop.
//
// A lanes type L describes one register of floats:
//   L::reg, L::W (floats per register), load / store (unaligned), fma(a, b, c) = a * b + c,
//   mul, max(a, b) (b when a is NaN, as _mm*_max_ps), set1, zero.
#pragma once
#include <cstdint>

#include "core/macros.h"

namespace fl {
namespace FL_ISA_NS {

// What the micro-kernel may apply itself as it stores the last KC block of a
// full tile: C(i, j) += bias[j], then max(C, 0) when relu (everything else
// runs as a separate epilogue pass over the tile, cpu/gemm/gemm_tile.h).
struct TileEpilogue {
  const float* bias_col = nullptr;
  bool relu = false;
};

// C(i, v * W + l) for i < R, v < NV from acc[i][v] lane l:
//   bias or relu:  c = alpha acc + bias (+ beta C when beta != 0), then max(c, 0) when relu
//   beta == 0:     c = alpha acc                (C is not read: it may hold NaN)
//   beta == 1:     c = alpha acc + C
//   otherwise:     c = alpha acc + beta C
template <class L, int R, int NV>
FL_HD void store_tile(const typename L::reg (&acc)[R][NV], float* C, int64_t ldc, float alpha, float beta,
                      TileEpilogue ep) {
  using reg = typename L::reg;
  constexpr int W = L::W;
  const reg va = L::set1(alpha);
  if (ep.bias_col || ep.relu) {  // the fused Linear's last block
    const reg bz = L::zero();
    reg bb[NV];
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) bb[v] = ep.bias_col ? L::load(ep.bias_col + v * W) : bz;
    const reg vb = L::set1(beta);
#pragma GCC unroll 12
    for (int i = 0; i < R; ++i) {
#pragma GCC unroll 8
      for (int v = 0; v < NV; ++v) {
        float* c = C + i * ldc + v * W;
        reg x = L::fma(va, acc[i][v], bb[v]);
        if (beta != 0.0f) x = L::fma(vb, L::load(c), x);
        if (ep.relu) x = L::max(x, bz);  // max(NaN, 0) is 0, as the epilogue pass's v > 0 ? v : 0
        L::store(c, x);
      }
    }
  } else if (beta == 0.0f) {
#pragma GCC unroll 12
    for (int i = 0; i < R; ++i) {
#pragma GCC unroll 8
      for (int v = 0; v < NV; ++v) L::store(C + i * ldc + v * W, L::mul(va, acc[i][v]));
    }
  } else if (beta == 1.0f) {
#pragma GCC unroll 12
    for (int i = 0; i < R; ++i) {
#pragma GCC unroll 8
      for (int v = 0; v < NV; ++v) {
        float* c = C + i * ldc + v * W;
        L::store(c, L::fma(va, acc[i][v], L::load(c)));
      }
    }
  } else {
    const reg vb = L::set1(beta);
#pragma GCC unroll 12
    for (int i = 0; i < R; ++i) {
#pragma GCC unroll 8
      for (int v = 0; v < NV; ++v) {
        float* c = C + i * ldc + v * W;
        L::store(c, L::fma(va, acc[i][v], L::mul(vb, L::load(c))));
      }
    }
  }
}

// K::run_rows<rows>(...) for a run-time 1 <= rows <= K::MR (more runs MR):
// the bottom edge of C without wasted rows or a copy (the A panel keeps its
// MR stride).  A switch, as each kernel had: the large row counts stay calls
// instead of being inlined into every driver, and the switch itself is one
// out-of-line function, as each kernel's run_m was (inlined, it tripled the
// drivers' code).
template <class K>
__attribute__((noinline)) void run_rows_of(int rows, int64_t kc, const float* A, const float* B, float* C, int64_t ldc, float alpha,
                        float beta, TileEpilogue ep) {
  static_assert(K::MR >= 1 && K::MR <= 16, "rows of a micro-kernel tile");
#define FL_TILE_ROWS(n)                                            \
  case n:                                                          \
    if constexpr (n < K::MR) {                                     \
      K::template run_rows<n>(kc, A, B, C, ldc, alpha, beta, ep);  \
      return;                                                      \
    }                                                              \
    break;
  switch (rows) {
    FL_TILE_ROWS(1) FL_TILE_ROWS(2) FL_TILE_ROWS(3) FL_TILE_ROWS(4) FL_TILE_ROWS(5)
    FL_TILE_ROWS(6) FL_TILE_ROWS(7) FL_TILE_ROWS(8) FL_TILE_ROWS(9) FL_TILE_ROWS(10)
    FL_TILE_ROWS(11) FL_TILE_ROWS(12) FL_TILE_ROWS(13) FL_TILE_ROWS(14) FL_TILE_ROWS(15)
    default: break;
  }
#undef FL_TILE_ROWS
  K::template run_rows<K::MR>(kc, A, B, C, ldc, alpha, beta, ep);
}

}  // namespace FL_ISA_NS
}  // namespace fl
