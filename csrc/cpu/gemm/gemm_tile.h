// One tile of the SGEMM, as the drivers of cpu/gemm/gemm_kernels.cpp run it,
// and the GEMM epilogue: the part of the GEMM between the micro-kernel and C.
// Included by gemm_kernels.cpp and by the C++ micro-kernel test
// (csrc/tests/gemm_micro_test.cpp), both compiled once per ISA.
//
// The epilogue (bias, pre-activation store, activation) runs on each tile
// right after its last KC block is written, while the tile is still in L1:
// Linear + bias + activation is one pass over C.  A bias per column and/or
// ReLU with no pre-activation is applied by the micro-kernel's own store
// (micro_tile.h); everything else by epilogue_block_t below, whose
// activations are those of kernels/fast_math.h (the RNN cells and the
// convolutions use the same ones).
#pragma once
#include <cstdint>

#include "core/macros.h"
#include "cpu/gemm/gemm_micro.h"
#include "kernels/fast_math.h"
#include "kernels/gemm_args.h"

namespace fl {
namespace FL_ISA_NS {

// ---- epilogue -------------------------------------------------------------------------
// One row of one tile: v = c + bias; preact = v; c = act(v).
// kBias: 0 none, 1 per column (bias[j]), 2 per row (one value).
template <class T, Activation kAct, int kBias, bool kPre>
void epilogue_row(T* __restrict c, T* __restrict p, const T* __restrict bcol, T brow, int64_t n) {
  for (int64_t j = 0; j < n; ++j) {
    T v = c[j];
    if (kBias == 1) v += bcol[j];
    if (kBias == 2) v += brow;
    if (kPre) p[j] = v;
    if (kAct == Activation::identity) c[j] = v;
    if (kAct == Activation::relu) c[j] = v > T(0) ? v : T(0);
    if (kAct == Activation::tanh) c[j] = fast_tanh(v);
    if (kAct == Activation::sigmoid) c[j] = fast_sigmoid(v);
  }
}

template <class T, Activation kAct, int kBias, bool kPre>
void epilogue_block_t(const GemmArgs<T>& g, int64_t i0, int64_t j0, int64_t mr, int64_t nr) {
  for (int64_t i = 0; i < mr; ++i) {
    const int64_t r = i0 + i;
    T* c = g.C + r * g.ldc + j0;
    T* p = kPre ? g.preact + r * g.ld_preact + j0 : nullptr;
    const T* bcol = kBias == 1 ? g.bias + j0 : nullptr;
    const T brow = kBias == 2 ? g.bias[r] : T(0);
    epilogue_row<T, kAct, kBias, kPre>(c, p, bcol, brow, nr);
  }
}

template <class T>
using EpilogueFn = void (*)(const GemmArgs<T>&, int64_t, int64_t, int64_t, int64_t);

template <class T, Activation kAct, int kBias>
EpilogueFn<T> pick_pre(bool pre) {
  return pre ? &epilogue_block_t<T, kAct, kBias, true> : &epilogue_block_t<T, kAct, kBias, false>;
}
template <class T, Activation kAct>
EpilogueFn<T> pick_bias(int bias, bool pre) {
  if (bias == 1) return pick_pre<T, kAct, 1>(pre);
  if (bias == 2) return pick_pre<T, kAct, 2>(pre);
  return pick_pre<T, kAct, 0>(pre);
}
// nullptr when there is nothing to do after alpha*AB + beta*C.
template <class T>
EpilogueFn<T> pick_epilogue(const GemmArgs<T>& g) {
  const int bias = g.bias == nullptr ? 0 : g.bias_axis == BiasAxis::per_col ? 1 : g.bias_axis == BiasAxis::per_row ? 2 : 0;
  const bool pre = g.preact != nullptr;
  switch (g.act) {
    case Activation::relu: return pick_bias<T, Activation::relu>(bias, pre);
    case Activation::tanh: return pick_bias<T, Activation::tanh>(bias, pre);
    case Activation::sigmoid: return pick_bias<T, Activation::sigmoid>(bias, pre);
    case Activation::identity: break;
  }
  if (bias == 0 && !pre) return nullptr;
  return pick_bias<T, Activation::identity>(bias, pre);
}

// Epilogues the micro-kernel can apply in its final store: a bias per column
// and/or ReLU, with no pre-activation to keep.
inline bool in_kernel_epilogue(const GemmArgs<float>& g) {
  const bool bias_ok = g.bias == nullptr || g.bias_axis == BiasAxis::per_col;
  const bool act_ok = g.act == Activation::identity || g.act == Activation::relu;
  return bias_ok && act_ok && g.preact == nullptr;
}

// One MR x NR tile: C(ic.., jc..) = alpha * Ap Bp + beta * C, then the
// epilogue when this was the last KC block.  A tile short of rows runs the
// micro-kernel for just those rows; one short of columns goes through `tile`.
inline void run_tile(const GemmArgs<float>& g, EpilogueFn<float> epi, const float* ap, const float* bp, int64_t kc,
                     int64_t i, int64_t j, int64_t mr, int64_t nr, float beta, bool last, float* tile) {
  float* c = g.C + i * g.ldc + j;
  if (nr == MicroKernel::NR) {
    if (last && epi && in_kernel_epilogue(g)) {
      // bias per column and/or ReLU applied by the micro-kernel as it stores (no second pass)
      TileEpilogue ep;
      ep.bias_col = g.bias ? g.bias + j : nullptr;
      ep.relu = g.act == Activation::relu;
      MicroKernel::run_m(int(mr), kc, ap, bp, c, g.ldc, g.alpha, beta, ep);
      return;
    }
    MicroKernel::run_m(int(mr), kc, ap, bp, c, g.ldc, g.alpha, beta);
  } else {
    MicroKernel::run_m(int(mr), kc, ap, bp, tile, MicroKernel::NR, 1.0f, 0.0f);
    for (int64_t r = 0; r < mr; ++r) {
      float* cr = c + r * g.ldc;
      const float* tr = tile + r * MicroKernel::NR;
      if (beta == 0.0f) {
        for (int64_t q = 0; q < nr; ++q) cr[q] = g.alpha * tr[q];
      } else {
        for (int64_t q = 0; q < nr; ++q) cr[q] = g.alpha * tr[q] + beta * cr[q];
      }
    }
  }
  if (last && epi) epi(g, i, j, mr, nr);
}

}  // namespace FL_ISA_NS
}  // namespace fl
