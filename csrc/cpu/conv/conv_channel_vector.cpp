// Convolution with vectors along the output channels (compiled once per ISA): the forward as an
// implicit GEMM on the zero-bordered image, the weight gradient, and the input gradient of strided
// convolutions by stride phases.  No im2col matrix, no packing, no scatter of a band.
#include <algorithm>
#include <atomic>
#include <cstring>
#include <type_traits>
#include <vector>

#include "cpu/conv/conv_internal.h"
#include "cpu/transpose8x8.h"

namespace fl {
namespace FL_ISA_NS {
namespace conv {

// dst[q*ldd + k] = src[k*lds + q] for k < nk, q < nq (8x8 blocks in registers for float).
template <class T>
void transpose_into(const T* __restrict src, int64_t lds, int64_t nk, int64_t nq, T* __restrict dst, int64_t ldd) {
  int64_t k0 = 0;
#if defined(__AVX512F__)
  if constexpr (std::is_same<T, float>::value) {  // 16x16 blocks: 64 shuffles per 256 elements
    for (; k0 + 16 <= nk; k0 += 16) {
      int64_t q0 = 0;
      for (; q0 + 16 <= nq; q0 += 16) {
        const float* s0 = src + k0 * lds + q0;
        __m512 r[16], t[16], u[16];
        for (int i = 0; i < 16; ++i) r[i] = _mm512_loadu_ps(s0 + i * lds);
        for (int i = 0; i < 8; ++i) {
          t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
          t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
        }
        // u[4i + m], 128-bit lane L: column 4L + m of rows 4i .. 4i + 3
        for (int i = 0; i < 4; ++i) {
          u[4 * i + 0] = _mm512_shuffle_ps(t[4 * i + 0], t[4 * i + 2], 0x44);
          u[4 * i + 1] = _mm512_shuffle_ps(t[4 * i + 0], t[4 * i + 2], 0xEE);
          u[4 * i + 2] = _mm512_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0x44);
          u[4 * i + 3] = _mm512_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0xEE);
        }
        float* d0 = dst + q0 * ldd + k0;
        for (int m = 0; m < 4; ++m) {
          const __m512 v0 = _mm512_shuffle_f32x4(u[m], u[4 + m], 0x44), v1 = _mm512_shuffle_f32x4(u[m], u[4 + m], 0xEE);
          const __m512 v2 = _mm512_shuffle_f32x4(u[8 + m], u[12 + m], 0x44);
          const __m512 v3 = _mm512_shuffle_f32x4(u[8 + m], u[12 + m], 0xEE);
          _mm512_storeu_ps(d0 + (0 + m) * ldd, _mm512_shuffle_f32x4(v0, v2, 0x88));
          _mm512_storeu_ps(d0 + (4 + m) * ldd, _mm512_shuffle_f32x4(v0, v2, 0xDD));
          _mm512_storeu_ps(d0 + (8 + m) * ldd, _mm512_shuffle_f32x4(v1, v3, 0x88));
          _mm512_storeu_ps(d0 + (12 + m) * ldd, _mm512_shuffle_f32x4(v1, v3, 0xDD));
        }
      }
      for (int64_t k = k0; k < k0 + 16; ++k)
        for (int64_t q = q0; q < nq; ++q) dst[q * ldd + k] = src[k * lds + q];
    }
  }
#endif
#if defined(__AVX2__) || defined(__AVX512F__)
  if constexpr (std::is_same<T, float>::value) {
    for (; k0 + 8 <= nk; k0 += 8) {
      int64_t q0 = 0;
      for (; q0 + 8 <= nq; q0 += 8) {
        transpose8x8_strided(src + k0 * lds + q0, lds, dst + q0 * ldd + k0, ldd);
      }
      for (int64_t k = k0; k < k0 + 8; ++k)
        for (int64_t q = q0; q < nq; ++q) dst[q * ldd + k] = src[k * lds + q];
    }
  }
#endif
  for (int64_t k = k0; k < nk; ++k)
    for (int64_t q = 0; q < nq; ++q) dst[q * ldd + k] = src[k * lds + q];
}

using tuning::kTilePad;

// Pixels per chunk of the forward's y^T [pixels, KP]: ~kCvOutBytes (L2), a multiple of kTilePad.
template <class T>
int64_t cv_pixel_chunk(int64_t KP) {
  return std::max<int64_t>(2 * kTilePad, tuning::kCvOutBytes / int64_t(KP * sizeof(T)) / kTilePad * kTilePad);
}

// ---- the channel-vector kernels' tables over the zero-bordered image [C, HP, WP] -------------
// Offset of output pixel q's window (row-major over OH x OW) for the n entries of the table;
// entries past the image repeat pixel 0 (tiles that run past the end compute it, never store it).
inline std::vector<int64_t> cv_pixel_table(const ConvShape& p, int64_t WP, int64_t n) {
  std::vector<int64_t> pix(static_cast<size_t>(n));
  const int64_t OHW = p.OH * p.OW;
  for (int64_t q = 0; q < n; ++q) {
    const int64_t u = q < OHW ? q : 0;
    pix[size_t(q)] = (u / p.OW) * p.stride_h * WP + (u % p.OW) * p.stride_w;
  }
  return pix;
}
// Offset of tap t = (c, r, s) from a window's origin, for n entries; entries past the C*R*S
// taps repeat tap 0.
inline std::vector<int64_t> cv_tap_offsets(const ConvShape& p, int64_t HP, int64_t WP, int64_t n) {
  std::vector<int64_t> offs(static_cast<size_t>(n));
  const int64_t CRS = p.Cg() * p.R * p.S;
  for (int64_t t = 0; t < n; ++t) {
    const int64_t u = t < CRS ? t : 0;
    const int64_t c = u / (p.R * p.S), r = u / p.S % p.R, s = u % p.S;
    offs[size_t(t)] = (c * HP + r * p.dil_h) * WP + s * p.dil_w;
  }
  return offs;
}

// ---- forward with vectors along the output channels ------------------------------------------
// An implicit GEMM: y^T[p, k] = bias[k] + sum_t xpad[pix(p) + off(t)] * w^T[t, k] (taps, pix and
// the zero-bordered input as in the weight gradient above), for the shapes the width-vectorised
// direct kernel cannot take (strides, small images: an 8x8 output is half a 16-wide chunk).
// Per image: tiles of MP pixels x KV channel vectors in registers; per tap KV vector loads of
// w^T, MP broadcasts of x, MP*KV FMAs.  No im2col matrix, no packing of it, no scatter of a
// band: the only extra pass is the transpose of y^T [pixels, KP] (in L1/L2) into NCHW, with the
// activation.  The taps run in blocks of kCvTapBlock (see there); the accumulators go through
// y^T between blocks.
template <class T>
struct CvFwd {
  static constexpr int kMaxKV = tuning::kCvFwdMaxKV, kMPMain = tuning::kCvFwdPixels;
  static constexpr int kMPRest = tuning::kCvFwdPixelsRest;
};
// (Tap blocks, tuning::kCvTapBlock: streaming w^T from L2 costs less than the accumulators' round
// trips through y^T, so blocks only bound that stream for very deep layers.)

// Prefetches, a line each every kLookAheadTaps taps of a tile (whose FMAs leave the memory system
// idle), of the next image's input (into L2, for its zero-bordered copy) and of this image's
// output (for writing: the transpose into y waited on its lines).  A burst of prefetches per tile
// instead stalled on the line fill buffers.
struct LookAhead {
  const char* p = nullptr;
  const char* end = nullptr;
  char* w = nullptr;
  char* wend = nullptr;
  void one() {
    if (p < end) {
      __builtin_prefetch(p, 0, 2);
      p += 64;
    }
    if (w < wend) {
      __builtin_prefetch(w, 1, 3);
      w += 64;
    }
  }
};

template <class T, int KV, int MP>
void cv_fwd_tile(const T* __restrict xpad, const int64_t* __restrict pix, const int64_t* __restrict offs,
                 int64_t t0, int64_t t1, const T* __restrict wT, int64_t KP, T* __restrict yT, const T* bias,
                 LookAhead* ahead) {
  using D = DirectVec<T>;
  using V = typename D::V;
  constexpr int VW = D::width;
  const T* xb[MP];
  for (int i = 0; i < MP; ++i) xb[i] = xpad + pix[i];
  V acc[MP][KV];
  if (bias) {
    for (int j = 0; j < KV; ++j) {
      const V b = D::load(bias + j * VW);
      for (int i = 0; i < MP; ++i) acc[i][j] = b;
    }
  } else {
    for (int i = 0; i < MP; ++i)
      for (int j = 0; j < KV; ++j) acc[i][j] = D::load(yT + i * KP + j * VW);
  }
  for (int64_t tb = t0; tb < t1; tb += tuning::kLookAheadTaps) {
    if (ahead) ahead->one();
    const int64_t te = std::min(t1, tb + tuning::kLookAheadTaps);
#pragma GCC unroll 4
    for (int64_t t = tb; t < te; ++t) {
      const int64_t o = offs[t];
      const T* wt = wT + t * KP;
      V wv[KV];
      for (int j = 0; j < KV; ++j) wv[j] = D::load(wt + j * VW);
      for (int i = 0; i < MP; ++i) {
        const V xv = D::set1(xb[i][o]);
        for (int j = 0; j < KV; ++j) acc[i][j] = D::fma(xv, wv[j], acc[i][j]);
      }
    }
  }
  for (int i = 0; i < MP; ++i)
    for (int j = 0; j < KV; ++j) D::store(yT + i * KP + j * VW, acc[i][j]);
}

// Every pixel tile of one image for KV vectors at column kv0, tap block [t0, t1).
template <class T, int KV, int MP>
void cv_fwd_tiles(const T* xpad, const int64_t* pix, int64_t np, const int64_t* offs, int64_t t0, int64_t t1,
                  const T* wT, int64_t KP, int64_t kv0, T* yT, const T* bias, LookAhead* ahead) {
  constexpr int VW = DirectVec<T>::width;
  const T* b = bias ? bias + kv0 * VW : nullptr;
  int64_t q0 = 0;
  for (; q0 + MP <= np; q0 += MP)
    cv_fwd_tile<T, KV, MP>(xpad, pix + q0, offs, t0, t1, wT + kv0 * VW, KP, yT + q0 * KP + kv0 * VW, b, ahead);
  if (q0 == np) return;
  T* yq = yT + q0 * KP + kv0 * VW;
  const T* wq = wT + kv0 * VW;
  // the last, partial tile: with the widest vector block, a shorter tile (an 8x8 image is
  // 10 x 6 + 4 pixels: a padded 11th tile of 6 would compute 3 % more); others compute
  // into the padding pixels
  if (KV == CvFwd<T>::kMaxKV && MP == CvFwd<T>::kMPMain) {
    switch (np - q0) {
      case 1: cv_fwd_tile<T, KV, 1>(xpad, pix + q0, offs, t0, t1, wq, KP, yq, b, ahead); return;
      case 2: cv_fwd_tile<T, KV, 2>(xpad, pix + q0, offs, t0, t1, wq, KP, yq, b, ahead); return;
      case 3: cv_fwd_tile<T, KV, 3>(xpad, pix + q0, offs, t0, t1, wq, KP, yq, b, ahead); return;
      case 4: cv_fwd_tile<T, KV, 4>(xpad, pix + q0, offs, t0, t1, wq, KP, yq, b, ahead); return;
      case 5: cv_fwd_tile<T, KV, 5>(xpad, pix + q0, offs, t0, t1, wq, KP, yq, b, ahead); return;
      default: break;
    }
  }
  cv_fwd_tile<T, KV, MP>(xpad, pix + q0, offs, t0, t1, wq, KP, yq, b, ahead);
}

// y^T[q, :] = bias + sum_t xin[pix[q] + offs[t]] * w^T[t, :] for the nq pixels of a chunk (pix
// readable up to kTilePad - 1 entries past nq), every block of channel vectors and every tap block.
template <class T>
void cv_run(const T* xpad, const int64_t* pq, int64_t nq, const int64_t* offs, int64_t CRS, const T* wg, int64_t KP,
            const T* bg, T* yT, LookAhead* ahead = nullptr) {
  using C = CvFwd<T>;
  constexpr int VW = DirectVec<T>::width;
  const int64_t KV = KP / VW;
  // per block of channel vectors, the tap blocks (measured faster than the reverse order)
  for (int64_t kv0 = 0; kv0 < KV; kv0 += C::kMaxKV) {
    for (int64_t t0 = 0; t0 < CRS; t0 += tuning::kCvTapBlock) {
      const int64_t t1 = std::min(CRS, t0 + tuning::kCvTapBlock);
      const T* b0 = t0 == 0 ? bg : nullptr;  // the first block starts from the bias, the others from y^T
      switch (std::min<int64_t>(C::kMaxKV, KV - kv0)) {
        case C::kMaxKV:
          cv_fwd_tiles<T, C::kMaxKV, C::kMPMain>(xpad, pq, nq, offs, t0, t1, wg, KP, kv0, yT, b0, ahead);
          break;
        case 1: cv_fwd_tiles<T, 1, C::kMPRest>(xpad, pq, nq, offs, t0, t1, wg, KP, kv0, yT, b0, ahead); break;
#if defined(__AVX512F__)
        case 2: cv_fwd_tiles<T, 2, C::kMPRest>(xpad, pq, nq, offs, t0, t1, wg, KP, kv0, yT, b0, ahead); break;
        case 3: cv_fwd_tiles<T, 3, C::kMPRest>(xpad, pq, nq, offs, t0, t1, wg, KP, kv0, yT, b0, ahead); break;
#endif
        default: break;
      }
    }
  }
}

template <class T>
void cv_forward(const ConvArgs<T>& a) {
  const ConvShape& p = a.s;
  const int64_t Cg = p.Cg(), Kg = p.Kg(), CRS = Cg * p.R * p.S, KP = cv_kp<T>(p);
  const int64_t OHW = p.OH * p.OW, HP = p.H + 2 * p.pad_h, WP = p.W + 2 * p.pad_w;
  // pixel chunks of ~kCvOutBytes of y^T (L2); the last tile of a chunk may run up to kTilePad - 1
  // pixels past it: the pixel table is padded (repeating pixel 0: computed, never stored)
  const int64_t PCF = cv_pixel_chunk<T>(KP);
  const std::vector<int64_t> pix = cv_pixel_table(p, WP, OHW + kTilePad), offs = cv_tap_offsets(p, HP, WP, CRS);
  // w^T per group [CRS, KP] and the bias [KP], zeros past Kg
  std::vector<T> wbuf, bbuf;
  T* wT = zeros64(wbuf, size_t(p.groups * CRS * KP));
  T* bT = zeros64(bbuf, size_t(p.groups * KP));
  for (int64_t g = 0; g < p.groups; ++g) {
    transpose_into(a.w + g * Kg * CRS, CRS, Kg, CRS, wT + g * CRS * KP, KP);
    if (a.bias) std::copy(a.bias + g * Kg, a.bias + (g + 1) * Kg, bT + g * KP);
  }
  const int64_t image = p.C * p.H * p.W;  // one image's input (its successor's is prefetched)
  std::atomic<int64_t> next{0};
  run_team(conv_team(p, p.N), [&](int, int nt) {
    T* xpad = scratch<T>(Scratch::padded_input, size_t(Cg * HP * WP));
    T* yT = scratch<T>(Scratch::channel_major, size_t((PCF + kTilePad) * KP));
    bool borders = false;  // this thread's scratch has its zero border (from its first image on)
    for (int64_t n; (n = next.fetch_add(1, std::memory_order_relaxed)) < p.N;) {
      // meanwhile: image n + nt's input (likely this thread's next one: a guess costs a little
      // bandwidth, claiming it ahead would unbalance small batches) and this image's output
      LookAhead ahead;
      if (n + nt < p.N) {
        ahead.p = reinterpret_cast<const char*>(a.x + (n + nt) * image);
        ahead.end = ahead.p + image * int64_t(sizeof(T));
      }
      ahead.w = reinterpret_cast<char*>(a.y + n * p.K * OHW);
      ahead.wend = ahead.w + p.K * OHW * int64_t(sizeof(T));
      for (int64_t g = 0; g < p.groups; ++g) {
        direct_pad_input(p, a.x, n, g, xpad, HP, WP, borders);
        borders = true;
        const T* wg = wT + g * CRS * KP;
        const T* bg = bT + g * KP;
        T* yg = a.y + (n * p.K + g * Kg) * OHW;
        for (int64_t q0 = 0; q0 < OHW; q0 += PCF) {
          const int64_t nq = std::min(PCF, OHW - q0);
          cv_run(xpad, pix.data() + q0, nq, offs.data(), CRS, wg, KP, bg, yT, &ahead);
          transpose_into(yT, KP, nq, Kg, yg + q0, OHW);
          if (a.act != Activation::identity)
            for (int64_t k = 0; k < Kg; ++k) act_inplace(a.act, yg + k * OHW + q0, nq);
        }
      }
    }
  });
}

// ---- weight gradient with vectors along the output channels ----------------------------------
// dw[k, t] += sum_{n, p} g[n, k, p] * xpad[n, pix(p) + off(t)] for every tap t = (c, r, s)
// (off(t) = (c*HP + r*dil_h)*WP + s*dil_w in the zero-bordered input, pix(p) = oh*stride_h*WP +
// ow*stride_w): any stride and dilation.  The output gradient of a chunk of pixels is
// transposed to [pixels, KP] (KP = Kg rounded up to the vector width, zeros past Kg), and a
// tile of NT taps x KV channel vectors is accumulated in registers over the chunk: per pixel
// KV vector loads of g, NT broadcasts of x, NT*KV FMAs -- no reduction across lanes (the
// vectors-along-the-width kernel above sums 12 vectors per (c, r) and image, which with
// 16-wide vectors cost as much as its FMAs).  The sums live in a per-thread dw^T [taps, KP]
// (the tile's accumulators are loaded and stored once per chunk).
template <class T>
struct CvDw {
  static constexpr int VW = DirectVec<T>::width;
  static constexpr int kMaxKV = tuning::kCvDwMaxKV;
  static constexpr int kNTMain = tuning::kCvDwTaps;      // taps per tile with kMaxKV vectors
  static constexpr int kNTRest = tuning::kCvDwTapsRest;  // taps per tile for a narrower remainder
};

template <class T, int KV, int NT>
void cv_dw_tile(const T* __restrict xpad, const int64_t* __restrict pix, int64_t np, const T* __restrict gT,
                int64_t KP, const int64_t* __restrict offs, T* __restrict dwT) {
  using D = DirectVec<T>;
  using V = typename D::V;
  constexpr int VW = D::width;
  int64_t o[NT];
  for (int i = 0; i < NT; ++i) o[i] = offs[i];
  V acc[NT][KV];
  for (int i = 0; i < NT; ++i)
    for (int j = 0; j < KV; ++j) acc[i][j] = D::load(dwT + i * KP + j * VW);
  for (int64_t q = 0; q < np; ++q) {
    const T* xb = xpad + pix[q];
    const T* gq = gT + q * KP;
    V gv[KV];
    for (int j = 0; j < KV; ++j) gv[j] = D::load(gq + j * VW);
    for (int i = 0; i < NT; ++i) {
      const V xv = D::set1(xb[o[i]]);
      for (int j = 0; j < KV; ++j) acc[i][j] = D::fma(xv, gv[j], acc[i][j]);
    }
  }
  for (int i = 0; i < NT; ++i)
    for (int j = 0; j < KV; ++j) D::store(dwT + i * KP + j * VW, acc[i][j]);
}

// All taps (tiles of NT, the offsets padded to a multiple of NT) for KV vectors at column kv0.
template <class T, int KV, int NT>
void cv_dw_taps(const T* xpad, const int64_t* pix, int64_t np, const T* gT, int64_t KP, const int64_t* offs,
                int64_t crs, int64_t kv0, T* dwT) {
  constexpr int VW = DirectVec<T>::width;
  for (int64_t t0 = 0; t0 < crs; t0 += NT)  // the last tile may run into the padding taps
    cv_dw_tile<T, KV, NT>(xpad, pix, np, gT + kv0 * VW, KP, offs + t0, dwT + t0 * KP + kv0 * VW);
}

// Taps padded to a multiple of every tile length.
inline int64_t cv_dw_taps_pad(int64_t crs) { return (crs + kTilePad - 1) / kTilePad * kTilePad; }

template <class T>
void cv_dw_image(const ConvArgs<T>& a, const T* g, int64_t n, const int64_t* pix, const int64_t* offs,
                 int64_t taps_pad, T* dwT, bool& borders) {
  using C = CvDw<T>;
  constexpr int VW = C::VW;
  const ConvShape& p = a.s;
  const int64_t Cg = p.Cg(), Kg = p.Kg(), KP = cv_kp<T>(p), OHW = p.OH * p.OW, KV = KP / VW;
  const int64_t HP = p.H + 2 * p.pad_h, WP = p.W + 2 * p.pad_w, CRS = Cg * p.R * p.S;
  // pixels per chunk: g^T of the chunk in ~kChunkBytes (L1)
  const int64_t PC = std::max<int64_t>(16, tuning::kCvChunkBytes / int64_t(KP * sizeof(T)));
  T* xpad = scratch<T>(Scratch::padded_input, size_t(Cg * HP * WP));
  T* gT = scratch<T>(Scratch::channel_major, size_t(PC * KP));
  for (int64_t gr = 0; gr < p.groups; ++gr) {
    direct_pad_input(p, a.x, n, gr, xpad, HP, WP, borders);  // border zeroed once per thread and call
    borders = true;
    T* dwg = dwT + gr * taps_pad * KP;
    const T* gg = g + (n * p.K + gr * Kg) * OHW;
    for (int64_t p0 = 0; p0 < OHW; p0 += PC) {
      const int64_t np = std::min(PC, OHW - p0);
      transpose_into(gg + p0, OHW, Kg, np, gT, KP);
      if (KP > Kg)
        for (int64_t q = 0; q < np; ++q) std::fill(gT + q * KP + Kg, gT + (q + 1) * KP, T(0));
      int64_t kv0 = 0;
      for (; kv0 + C::kMaxKV <= KV; kv0 += C::kMaxKV)
        cv_dw_taps<T, C::kMaxKV, C::kNTMain>(xpad, pix + p0, np, gT, KP, offs, CRS, kv0, dwg);
      switch (KV - kv0) {
        case 1: cv_dw_taps<T, 1, C::kNTRest>(xpad, pix + p0, np, gT, KP, offs, CRS, kv0, dwg); break;
#if defined(__AVX512F__)
        case 2: cv_dw_taps<T, 2, C::kNTRest>(xpad, pix + p0, np, gT, KP, offs, CRS, kv0, dwg); break;
        case 3: cv_dw_taps<T, 3, C::kNTRest>(xpad, pix + p0, np, gT, KP, offs, CRS, kv0, dwg); break;
#endif
        default: break;
      }
    }
  }
}

// dw (+)= the weight gradient over all images (cv_dw_ok): per-thread dw^T, summed and transposed at the end.
template <class T>
void cv_weight_grad(const ConvArgs<T>& a, const T* g) {
  const ConvShape& p = a.s;
  const int64_t Cg = p.Cg(), Kg = p.Kg(), CRS = Cg * p.R * p.S, KP = cv_kp<T>(p), OHW = p.OH * p.OW;
  const int64_t HP = p.H + 2 * p.pad_h, WP = p.W + 2 * p.pad_w, taps_pad = cv_dw_taps_pad(CRS);
  // (padding taps read tap 0: their sums are dropped)
  const std::vector<int64_t> pix = cv_pixel_table(p, WP, OHW), offs = cv_tap_offsets(p, HP, WP, taps_pad);
  const int64_t part = p.groups * taps_pad * KP;
  const int nt = conv_team(p, p.N);
  std::vector<T> pbuf;
  T* parts = zeros64(pbuf, size_t(nt * part));
  std::atomic<int64_t> next{0};
  run_team(nt, [&](int t, int) {
    T* dwT = parts + t * part;
    bool borders = false;
    for (int64_t n; (n = next.fetch_add(1, std::memory_order_relaxed)) < p.N;)
      cv_dw_image(a, g, n, pix.data(), offs.data(), taps_pad, dwT, borders);
  });
  for (int64_t gr = 0; gr < p.groups; ++gr)
    for (int64_t k = 0; k < Kg; ++k)
      for (int64_t t = 0; t < CRS; ++t) {
        T s = 0;
        for (int u = 0; u < nt; ++u) s += parts[u * part + (gr * taps_pad + t) * KP + k];
        a.dw[(gr * Kg + k) * CRS + t] += s;
      }
}

// Input gradient of a strided convolution (dilation 1) by its stride phases: input pixels with
// the same (ih + pad_h) mod stride_h and (iw + pad_w) mod stride_w receive the same subset of taps
// (r = a + i*stride_h, s = b + j*stride_w), each from g at (u - i, v - j), u = (ih + pad_h - a) /
// stride_h, v likewise: per phase a stride-1 correlation of the zero-bordered g with a sub-kernel,
// run by the channel-vector kernel above (vectors along the input channels), its outputs
// scattered to the phase's pixels.  Replaces dcol = w^T g (a GEMM over the K channels) + col2im.
template <class T>
void cv_input_grad_strided(const ConvArgs<T>& a, const T* g) {
  constexpr int VW = DirectVec<T>::width;
  const ConvShape& p = a.s;
  const int64_t Cg = p.Cg(), Kg = p.Kg(), HW = p.H * p.W, RS = p.R * p.S, KP = (Cg + VW - 1) / VW * VW;
  const int64_t sh = p.stride_h, sw = p.stride_w;
  const int64_t Pt = (p.R + sh - 1) / sh - 1, Pl = (p.S + sw - 1) / sw - 1;  // g's zero border (top, left)
  const int64_t umax = (p.H - 1 + p.pad_h) / sh, vmax = (p.W - 1 + p.pad_w) / sw;
  const int64_t HPg = Pt + std::max(p.OH, umax + 1), WPg = Pl + std::max(p.OW, vmax + 1);
  struct Phase {
    std::vector<int64_t> pix, pos, offs;  // g offset and dx position per pixel; g offset per tap
    std::vector<int64_t> rows;            // per input row of the phase: first pixel, dx position, count
    std::vector<T> wbuf;                  // holds wT: [groups][taps][KP], 64-byte aligned
    T* wT = nullptr;
    int64_t taps = 0;
  };
  std::vector<Phase> ph(size_t(sh * sw));
  for (int64_t pa = 0; pa < sh; ++pa)
    for (int64_t pb = 0; pb < sw; ++pb) {
      Phase& f = ph[size_t(pa * sw + pb)];
      for (int64_t ih = 0; ih < p.H; ++ih) {
        if ((ih + p.pad_h) % sh != pa) continue;
        const int64_t u = (ih + p.pad_h - pa) / sh;
        const int64_t first = int64_t(f.pos.size());
        for (int64_t iw = 0; iw < p.W; ++iw) {
          if ((iw + p.pad_w) % sw != pb) continue;
          f.pix.push_back((u + Pt) * WPg + (iw + p.pad_w - pb) / sw + Pl);
          f.pos.push_back(ih * p.W + iw);
        }
        if (int64_t(f.pos.size()) > first) {
          f.rows.push_back(first);
          f.rows.push_back(f.pos[size_t(first)]);
          f.rows.push_back(int64_t(f.pos.size()) - first);
        }
      }
      if (f.pix.empty()) continue;
      for (int64_t i = 0; i < kTilePad; ++i) f.pix.push_back(f.pix[0]);  // tiles may run past the last pixel
      const int64_t ni = pa < p.R ? (p.R - pa + sh - 1) / sh : 0, nj = pb < p.S ? (p.S - pb + sw - 1) / sw : 0;
      f.taps = Kg * ni * nj;
      f.wT = zeros64(f.wbuf, size_t(p.groups * f.taps * KP));
      for (int64_t k = 0; k < Kg; ++k)
        for (int64_t i = 0; i < ni; ++i)
          for (int64_t j = 0; j < nj; ++j) {
            const int64_t t = (k * ni + i) * nj + j, r = pa + i * sh, s = pb + j * sw;
            f.offs.push_back(k * HPg * WPg - i * WPg - j);
            for (int64_t gr = 0; gr < p.groups; ++gr)
              for (int64_t c = 0; c < Cg; ++c)
                f.wT[(gr * f.taps + t) * KP + c] = a.w[((gr * Kg + k) * Cg + c) * RS + r * p.S + s];
          }
    }
  bool tapless = false;
  for (const Phase& f : ph) tapless |= !f.pos.empty() && f.taps == 0;
  ConvShape gs = p;  // g as an image to pad: K channels of OH x OW, at (Pt, Pl) in [HPg, WPg]
  gs.C = p.K;
  gs.H = p.OH;
  gs.W = p.OW;
  gs.pad_h = Pt;
  gs.pad_w = Pl;
  const int64_t PCF = cv_pixel_chunk<T>(KP);
  const std::vector<T> zero(size_t(KP), T(0));
  std::atomic<int64_t> next{0};
  run_team(conv_team(p, p.N), [&](int, int) {
    T* gpad = scratch<T>(Scratch::padded_input, size_t(Kg * HPg * WPg));
    T* yT = scratch<T>(Scratch::channel_major, size_t((PCF + kTilePad) * KP));
    T* ybuf = scratch<T>(Scratch::phase_outputs, size_t(PCF * Cg));
    bool borders = false;  // as in cv_forward
    for (int64_t n; (n = next.fetch_add(1, std::memory_order_relaxed)) < p.N;)
      for (int64_t gr = 0; gr < p.groups; ++gr) {
        direct_pad_input(gs, g, n, gr, gpad, HPg, WPg, borders);
        borders = true;
        T* dxg = a.dx + (n * p.C + gr * Cg) * HW;
        if (tapless) std::fill(dxg, dxg + Cg * HW, T(0));  // pixels no tap reaches (stride > kernel)
        for (const Phase& f : ph) {
          const int64_t np = int64_t(f.pos.size());
          if (np == 0 || f.taps == 0) continue;
          for (int64_t q0 = 0; q0 < np; q0 += PCF) {
            const int64_t nq = std::min(PCF, np - q0);
            cv_run(gpad, f.pix.data() + q0, nq, f.offs.data(), f.taps, f.wT + gr * f.taps * KP, KP,
                   zero.data(), yT);
            // y^T -> [Cg, nq] (vector transposes), then each channel's row to the phase's pixels
            // (reading y^T a column at a time costs a cache line per element)
            transpose_into(yT, KP, nq, Cg, ybuf, nq);
            for (size_t r = 0; r < f.rows.size(); r += 3) {  // the phase's pixels of one row: stride sw
              const int64_t qa = std::max(f.rows[r], q0), qb = std::min(f.rows[r] + f.rows[r + 2], q0 + nq);
              if (qa >= qb) continue;
              const int64_t at = f.rows[r + 1] + (qa - f.rows[r]) * sw;
              for (int64_t c = 0; c < Cg; ++c) {
                T* __restrict d = dxg + c * HW + at;
                const T* __restrict yc = ybuf + c * nq + (qa - q0);
                for (int64_t j = 0; j < qb - qa; ++j) d[j * sw] = yc[j];
              }
            }
          }
        }
      }
  });
}

// ---- instantiations -------------------------------------------------------------------------------
template void cv_forward<float>(const ConvArgs<float>&);
template void cv_weight_grad<float>(const ConvArgs<float>&, const float*);
template void cv_input_grad_strided<float>(const ConvArgs<float>&, const float*);
template void cv_forward<double>(const ConvArgs<double>&);
template void cv_weight_grad<double>(const ConvArgs<double>&, const double*);
template void cv_input_grad_strided<double>(const ConvArgs<double>&, const double*);

}  // namespace conv
}  // namespace FL_ISA_NS
}  // namespace fl
