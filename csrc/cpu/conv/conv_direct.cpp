// Direct convolution with vectors along the output width (compiled once per ISA): the forward
// of small reductions (the first layers of a CNN), its weight gradient, and the stride-1 input
// gradient as a forward convolution of the output gradient with flipped weights.
#include <algorithm>
#include <atomic>
#include <cstring>
#include <type_traits>
#include <vector>

#include "cpu/conv/conv_internal.h"

namespace fl {
namespace FL_ISA_NS {
namespace conv {

// ---- direct convolution for tiny reductions (the first layer of a CNN) -------------------------
// With Cg*R*S small (RGB / grey input: 27 taps for 3x3x3) im2col copies each
// input pixel R*S times into a [CRS, OH*OW] matrix that the GEMM then packs
// again, for a product whose inner dimension is too short to amortise either.
// Instead, per image: the group's input planes are copied once into a
// zero-bordered scratch [Cg, H + 2 pad_h, OWc + S - 1] (OWc = OW rounded up to
// the chunk width, so every chunk reads inside the scratch without tests), and
// each output row is computed in chunks of kDirectNV vectors along the width,
// for a block of KB output channels at a time: KB x kDirectNV accumulators in
// registers, one broadcast weight per channel and tap, one load per vector and
// tap (the taps of a row are consecutive unaligned loads).  The bias starts the
// accumulators; the activation is applied to the stored rows while they are in
// L1.  Stride 1, dilation 1 only (strided loads would need gathers).

// Output channels per register block: 3 when that divides Kg and 4 does not (LeNet's 6).
int direct_block(const ConvShape& p) { return p.Kg() % 4 != 0 && p.Kg() % 3 == 0 ? 3 : 4; }

// Weights regrouped per block of KB channels as [blocks][CRS][KB] (the KB
// weights of one tap adjacent), missing channels of a last block zero; bias [blocks][KB].
template <class T>
void direct_pack(const ConvArgs<T>& a, int KB, std::vector<T>& wpack, std::vector<T>& bpack) {
  const ConvShape& p = a.s;
  const int64_t Kg = p.Kg(), CRS = p.Cg() * p.R * p.S, bpg = (Kg + KB - 1) / KB;
  wpack.assign(size_t(p.groups * bpg * CRS * KB), T(0));
  bpack.assign(size_t(p.groups * bpg * KB), T(0));
  for (int64_t g = 0; g < p.groups; ++g)
    for (int64_t kk = 0; kk < Kg; ++kk) {
      const int64_t blk = g * bpg + kk / KB, i = kk % KB, k = g * Kg + kk;
      for (int64_t t = 0; t < CRS; ++t) wpack[size_t((blk * CRS + t) * KB + i)] = a.w[k * CRS + t];
      if (a.bias) bpack[size_t(blk * KB + i)] = a.bias[k];
    }
}

// d[0, lead) = 0, d[lead, lead + n) = src, d[lead + n, lead + n + trail) = 0: one padded row.
// Written as vector moves (for short rows GCC turns plain loops into memset / memcpy calls,
// which cost more than the copy); float with AVX-512 uses masked moves for the tails.
template <class T>
inline void padded_row(T* __restrict d, const T* __restrict src, int64_t lead, int64_t n, int64_t trail) {
#if defined(__AVX512F__)
  if constexpr (std::is_same<T, float>::value) {
    auto mask = [](int64_t m) { return __mmask16(m >= 16 ? 0xFFFF : (1u << m) - 1); };
    const __m512 z = _mm512_setzero_ps();
    for (int64_t i = 0; i < lead; i += 16) _mm512_mask_storeu_ps(d + i, mask(lead - i), z);
    for (int64_t i = 0; i < n; i += 16) {
      const __mmask16 m = mask(n - i);
      _mm512_mask_storeu_ps(d + lead + i, m, _mm512_maskz_loadu_ps(m, src + i));
    }
    for (int64_t i = 0; i < trail; i += 16) _mm512_mask_storeu_ps(d + lead + n + i, mask(trail - i), z);
    return;
  }
#endif
  for (int64_t i = 0; i < lead; ++i) d[i] = T(0);
  for (int64_t i = 0; i < n; ++i) d[lead + i] = src[i];
  for (int64_t i = 0; i < trail; ++i) d[lead + n + i] = T(0);
}

// Input planes of group g of image n into the zero-bordered scratch [Cg, HP, WP] (the image at
// row pad_h, column pad_w).  Only the border is zeroed (a memset of the whole scratch and a
// memcpy call per short row cost more than the copy).
// interior_only: the border is already zero (a thread's scratch reused for the next image of
// the same call): only the image rows are copied.
template <class T>
void direct_pad_input(const ConvShape& p, const T* x, int64_t n, int64_t g, T* xpad, int64_t HP, int64_t WP,
                      bool interior_only) {
  const int64_t Cg = p.Cg(), right = WP - p.pad_w - p.W;
  for (int64_t c = 0; c < Cg; ++c) {
    const T* xc = x + ((n * p.C + g * Cg + c) * p.H) * p.W;
    T* dc = xpad + c * HP * WP;
    if (interior_only) {
      for (int64_t h = 0; h < p.H; ++h) padded_row(dc + (h + p.pad_h) * WP + p.pad_w, xc + h * p.W, 0, p.W, 0);
      continue;
    }
    for (int64_t h = 0; h < p.pad_h; ++h) padded_row<T>(dc + h * WP, nullptr, WP, 0, 0);
    for (int64_t h = 0; h < p.H; ++h) padded_row(dc + (h + p.pad_h) * WP, xc + h * p.W, p.pad_w, p.W, right);
    for (int64_t h = p.H + p.pad_h; h < HP; ++h) padded_row<T>(dc + h * WP, nullptr, WP, 0, 0);
  }
}

// One output row per register block (blocks of 2-4 rows sharing each broadcast weight measured
// the same or slower: bench/RESULTS.md, "Convolution tuning").
template <class T, int KB, int SS>
void direct_image(const ConvArgs<T>& a, int64_t n, const T* wpack, const T* bpack) {
  using D = DirectVec<T>;
  using V = typename D::V;
  constexpr int VW = D::width, NV = tuning::kDirectNV, L = VW * NV;
  const ConvShape& p = a.s;
  const int64_t Cg = p.Cg(), Kg = p.Kg(), CRS = Cg * p.R * p.S, bpg = (Kg + KB - 1) / KB;
  const int64_t OWc = (p.OW + L - 1) / L * L, HP = p.H + 2 * p.pad_h, WP = OWc + p.S - 1;
  const int64_t S = SS > 0 ? SS : p.S, CR = Cg * p.R;  // S a constant for 3 and 5: the tap loop unrolled
  const bool relu = a.act == Activation::relu;          // applied in registers; others after the store
  int64_t rowoff[tuning::kDirectMaxTaps];  // offset of input row (c, r) in the scratch
  for (int64_t cr = 0; cr < CR; ++cr) rowoff[cr] = ((cr / p.R) * HP + cr % p.R) * WP;
  T* xpad = scratch<T>(Scratch::padded_input, size_t(Cg * HP * WP));
  for (int64_t g = 0; g < p.groups; ++g) {
    direct_pad_input(p, a.x, n, g, xpad, HP, WP);
    for (int64_t blk = 0; blk < bpg; ++blk) {
      const int64_t k0 = g * Kg + blk * KB, kb = std::min<int64_t>(KB, Kg - blk * KB);
      const T* wb = wpack + (g * bpg + blk) * CRS * KB;
      const T* bb = bpack + (g * bpg + blk) * KB;
      for (int64_t oh = 0; oh < p.OH; ++oh) {
        T* yrow[KB];
        for (int i = 0; i < KB; ++i) yrow[i] = a.y + ((n * p.K + k0 + std::min<int64_t>(i, kb - 1)) * p.OH + oh) * p.OW;
        for (int64_t ow0 = 0; ow0 < p.OW; ow0 += L) {
          V acc[KB][NV];
          for (int i = 0; i < KB; ++i)
            for (int j = 0; j < NV; ++j) acc[i][j] = D::set1(bb[i]);
          const T* xr0 = xpad + oh * WP + ow0;
          const T* wt = wb;
          for (int64_t cr = 0; cr < CR; ++cr) {
            const T* xr = xr0 + rowoff[cr];
            for (int64_t s = 0; s < S; ++s, wt += KB) {
              V xv[NV];
              for (int j = 0; j < NV; ++j) xv[j] = D::load(xr + s + j * VW);
              for (int i = 0; i < KB; ++i) {
                const V wv = D::set1(wt[i]);
                for (int j = 0; j < NV; ++j) acc[i][j] = D::fma(wv, xv[j], acc[i][j]);
              }
            }
          }
          if (relu)
            for (int i = 0; i < KB; ++i)
              for (int j = 0; j < NV; ++j) acc[i][j] = D::relu(acc[i][j]);
          if (ow0 + L <= p.OW) {
            for (int i = 0; i < KB; ++i)
              if (i < kb)
                for (int j = 0; j < NV; ++j) D::store(yrow[i] + ow0 + j * VW, acc[i][j]);
          } else {  // whole vectors inside the row stored directly, the partial one through a scratch
            const int64_t nfull = (p.OW - ow0) / VW, rest = p.OW - ow0 - nfull * VW;
            for (int i = 0; i < KB; ++i) {
              if (i >= kb) continue;
              for (int j = 0; j < NV; ++j) {
                if (j < nfull) {
                  D::store(yrow[i] + ow0 + j * VW, acc[i][j]);
                } else if (j == nfull && rest > 0) {
                  T tmp[VW];
                  D::store(tmp, acc[i][j]);
                  for (int64_t e = 0; e < rest; ++e) yrow[i][ow0 + j * VW + e] = tmp[e];
                }
              }
            }
          }
        }
        if (a.act != Activation::identity && !relu)
          for (int64_t i = 0; i < kb; ++i) act_inplace(a.act, yrow[i], p.OW);
      }
    }
  }
}

template <class T>
void direct_forward(const ConvArgs<T>& a) {
  const ConvShape& p = a.s;
  const int KB = direct_block(p);
  std::vector<T> wpack, bpack;
  direct_pack(a, KB, wpack, bpack);
  std::atomic<int64_t> next{0};
  run_team(conv_team(p, p.N), [&](int, int) {
    for (int64_t n; (n = next.fetch_add(1, std::memory_order_relaxed)) < p.N;) {
      const T *wp = wpack.data(), *bp = bpack.data();
      if (KB == 3)
        p.S == 5 ? direct_image<T, 3, 5>(a, n, wp, bp) : direct_image<T, 3, 0>(a, n, wp, bp);
      else if (p.S == 3)
        direct_image<T, 4, 3>(a, n, wp, bp);
      else if (p.S == 5)
        direct_image<T, 4, 5>(a, n, wp, bp);
      else
        direct_image<T, 4, 0>(a, n, wp, bp);
    }
  });
}

// Weight gradient of the convolutions the direct kernel computes (S = 3 or 5):
// dw[k, c, r, s] += sum_{n, oh, ow} g[n, k, oh, ow] xpad[n, c, oh + r, ow + s].
// Per image, block of KB output channels and input row (c, r): KB x S vector
// accumulators along the width (12 with S = 3, 10 with S = 5), one load per
// channel's g and per tap's x, reduced across lanes at the end.  g is copied
// into [KB, OH, OWc] with zeros past OW (the chunks then need no tail).
template <class T, int KB, int SS>
void direct_dw_image(const ConvArgs<T>& a, const T* g, int64_t n, T* dw_part) {
  using D = DirectVec<T>;
  using V = typename D::V;
  constexpr int VW = D::width;
  constexpr int64_t L = VW * tuning::kDirectNV;
  const ConvShape& p = a.s;
  const int64_t Cg = p.Cg(), Kg = p.Kg(), CRS = Cg * p.R * SS, OHW = p.OH * p.OW;
  const int64_t OWc = (p.OW + L - 1) / L * L, HP = p.H + 2 * p.pad_h, WP = OWc + SS - 1;
  T* xpad = scratch<T>(Scratch::padded_input, size_t(Cg * HP * WP));
  T* gpad = scratch<T>(Scratch::padded_grad, size_t(KB * p.OH * OWc));
  for (int64_t gr = 0; gr < p.groups; ++gr) {
    direct_pad_input(p, a.x, n, gr, xpad, HP, WP);
    for (int64_t k0 = 0; k0 < Kg; k0 += KB) {
      const int64_t kb = std::min<int64_t>(KB, Kg - k0);
      std::fill(gpad, gpad + KB * p.OH * OWc, T(0));
      for (int64_t i = 0; i < kb; ++i)
        for (int64_t oh = 0; oh < p.OH; ++oh)
          std::memcpy(gpad + (i * p.OH + oh) * OWc, g + (n * p.K + gr * Kg + k0 + i) * OHW + oh * p.OW,
                      size_t(p.OW) * sizeof(T));
      for (int64_t c = 0; c < Cg; ++c)
        for (int64_t r = 0; r < p.R; ++r) {
          V acc[KB][SS];
          for (int i = 0; i < KB; ++i)
            for (int j = 0; j < SS; ++j) acc[i][j] = D::set1(T(0));
          for (int64_t oh = 0; oh < p.OH; ++oh) {
            const T* xr = xpad + (c * HP + oh + r) * WP;
            const T* gr0 = gpad + oh * OWc;
            for (int64_t ow0 = 0; ow0 < OWc; ow0 += VW) {
              V gv[KB];
              for (int i = 0; i < KB; ++i) gv[i] = D::load(gr0 + i * p.OH * OWc + ow0);
              for (int j = 0; j < SS; ++j) {
                const V xv = D::load(xr + ow0 + j);
                for (int i = 0; i < KB; ++i) acc[i][j] = D::fma(gv[i], xv, acc[i][j]);
              }
            }
          }
          for (int64_t i = 0; i < kb; ++i)
            for (int j = 0; j < SS; ++j)
              dw_part[(gr * Kg + k0 + i) * CRS + (c * p.R + r) * SS + j] += D::hsum(acc[i][j]);
        }
    }
  }
}


// dw += the weight gradient over all images (direct_dw_ok): per-thread sums, added at the end.
template <class T>
void direct_weight_grad(const ConvArgs<T>& a, const T* g) {
  const ConvShape& p = a.s;
  const int64_t wsize = p.K * p.Cg() * p.R * p.S;
  const int nt = conv_team(p, p.N);
  std::vector<T> parts(size_t(nt * wsize), T(0));
  std::atomic<int64_t> next{0};
  run_team(nt, [&](int t, int) {
    T* part = parts.data() + t * wsize;
    for (int64_t n; (n = next.fetch_add(1, std::memory_order_relaxed)) < p.N;) {
      if (p.S == 3)
        direct_dw_image<T, 4, 3>(a, g, n, part);
      else
        direct_dw_image<T, 2, 5>(a, g, n, part);
    }
  });
  for (int t = 0; t < nt; ++t)
    for (int64_t j = 0; j < wsize; ++j) a.dw[j] += parts[size_t(t * wsize + j)];
}

template <class T>
void direct_input_grad(const ConvArgs<T>& a, const T* g) {
  const ConvShape& p = a.s;
  const int64_t Cg = p.Cg(), Kg = p.Kg(), RS = p.R * p.S;
  std::vector<T> wt(size_t(p.C * Kg * RS));
  for (int64_t gr = 0; gr < p.groups; ++gr)
    for (int64_t k = 0; k < Kg; ++k)
      for (int64_t c = 0; c < Cg; ++c) {
        const T* src = a.w + ((gr * Kg + k) * Cg + c) * RS;
        T* dst = wt.data() + ((gr * Cg + c) * Kg + k) * RS;
        for (int64_t i = 0; i < RS; ++i) dst[i] = src[RS - 1 - i];
      }
  ConvArgs<T> ta;
  ta.s = transposed_shape(p);
  ta.x = g;
  ta.w = wt.data();
  ta.y = a.dx;
  if (use_direct<T>(ta.s))
    direct_forward(ta);
  else
    cv_forward(ta);  // e.g. 16x16 and 8x8 images with 16-wide vectors: half a 32-wide chunk
}

// ---- instantiations -------------------------------------------------------------------------------
template void direct_forward<float>(const ConvArgs<float>&);
template void direct_weight_grad<float>(const ConvArgs<float>&, const float*);
template void direct_input_grad<float>(const ConvArgs<float>&, const float*);
template void direct_pad_input<float>(const ConvShape&, const float*, int64_t, int64_t, float*, int64_t, int64_t, bool);
template void direct_forward<double>(const ConvArgs<double>&);
template void direct_weight_grad<double>(const ConvArgs<double>&, const double*);
template void direct_input_grad<double>(const ConvArgs<double>&, const double*);
template void direct_pad_input<double>(const ConvShape&, const double*, int64_t, int64_t, double*, int64_t, int64_t, bool);

}  // namespace conv
}  // namespace FL_ISA_NS
}  // namespace fl
