// 2-D convolution (forward, backward-data, backward-weight, bias gradient),
// compiled once per instruction set, float32 and float64 from one template.
// NCHW as torch; weight [K, C/groups, R, S].  Arguments: kernels/conv_args.h.
//
// How each shape is computed (and why):
//  * 1x1, stride 1, no padding ("pointwise"): the image [Cg, H*W] already is the
//    GEMM operand, so y[n, g] = w[g] @ x[n, g] with the bias and activation in
//    the GEMM epilogue -- no copy at all.  Backward: dw += g_y @ x^T and
//    dx = w^T @ g_y, both straight GEMMs on the image.
//  * groups > 1 with one input channel per group (depthwise, incl. channel
//    multipliers): a direct kernel.  Each output channel is a sum of R*S scaled
//    shifted rows of one input plane, so a GEMM would have M = 1: the direct
//    loop over rows (contiguous, vectorised by the compiler for stride 1)
//    does the same arithmetic with no packing.
//  * stride 1, dilation 1, Cg*R*S <= kDirectMaxTaps, output rows filling the
//    vector chunks (RGB / grey first layers, 3x3 layers on 32x32 images):
//    forward by a direct register-blocked kernel with vectors along the width
//    (see direct_image); the input gradient is the same kind of convolution
//    (flipped weights), the weight gradient see below.
//  * when at least 3/4 of the vector lanes hold an output channel (K >= 12 with
//    AVX-512), kernels with vectors along the output channels (see cv_forward,
//    cv_weight_grad, cv_input_grad_strided): the forward where the direct kernel
//    does not fit (strides, 16x16 / 8x8 images) as an implicit GEMM on the
//    zero-bordered image, the weight gradient of every such shape, and the input
//    gradient (stride 1 as a forward with flipped weights, strided by stride
//    phases).  No im2col matrix, no packing, no scatter of a band.
//  * everything else: im2col + GEMM, but never for the whole batch.  The
//    column matrix [Cg*R*S, rows*OW] is built for a band of output rows
//    sized to about kColBudget bytes (it stays in L2 while the GEMM packs it),
//    and images are split over threads (each GEMM then runs on one thread:
//    no barriers inside a small product, no false sharing between images).
//    The full im2col buffer of a batch (64 x 288 x 1024 floats = 75 MB for the
//    32->64 layer) would be streamed through memory twice; the band is 256 KB.
//    Backward builds the same band once and uses it twice: dw += g_y band @
//    band^T (each thread accumulates its own dw, summed at the end, so images
//    stay independent) and dcol = w^T @ g_y band, scattered back by col2im.
//  * small output images (OH*OW < 256, e.g. 16x16 -> 8x8 at stride 2, or
//    LeNet's 10x10): the band spans several whole images (~256 columns), so
//    one GEMM per band packs the weight once for all of them and gets a wide
//    B; the outputs go through a small scratch (see conv_forward_images).
//    Threads then take bands instead of images.
//  With one image (or one thread) the image loop runs inline and the GEMM
//  splits its own work over the threads instead.
#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <limits>
#include <type_traits>
#include <vector>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "kernels/conv_args.h"
#include "cpu/conv/conv_common.h"
#include "cpu/isa_entry.h"
#include "cpu/transpose8x8.h"
#include "kernels/vec.h"

namespace fl {
namespace FL_ISA_NS {
namespace {
using namespace conv_common;

// Bytes of the im2col band (see above): half of Zen 3's / Skylake-SP's L2,
// leaving room for the GEMM's packed panels.
constexpr int64_t kColBudget = 256 << 10;

// ---- im2col / col2im over a band of output rows [oh0, oh1) -------------------------------
// col[(c*R + r)*S + s][(oh - oh0)*OW + ow] = x[c, oh*sh - ph + r*dh, ow*sw - pw + s*dw] (0 outside).
// ld: distance between the rows of col (default: the band's width).
template <class T>
void im2col_band(const ConvShape& p, const T* __restrict xg, int64_t oh0, int64_t oh1, T* __restrict col,
                 int64_t ld = 0) {
  const int64_t ncol = ld ? ld : (oh1 - oh0) * p.OW, Cg = p.Cg();
  // The valid output columns of kernel column s are the same for every channel
  // and kernel row: computed once here, not per (c, r, s) (two integer
  // divisions each, which cost as much as copying a row of a small image).
  constexpr int64_t kCachedTaps = 32;
  int64_t lo_s[kCachedTaps], hi_s[kCachedTaps];
  const bool cached = p.S <= kCachedTaps;
  if (cached)
    for (int64_t s = 0; s < p.S; ++s) valid_range(s * p.dil_w - p.pad_w, p.stride_w, p.W, p.OW, lo_s[s], hi_s[s]);
  for (int64_t c = 0; c < Cg; ++c) {
    const T* xc = xg + c * p.H * p.W;
    for (int64_t r = 0; r < p.R; ++r) {
      for (int64_t s = 0; s < p.S; ++s) {
        T* dst = col + ((c * p.R + r) * p.S + s) * ncol;
        const int64_t woff = s * p.dil_w - p.pad_w;
        int64_t lo, hi;
        if (cached) {
          lo = lo_s[s];
          hi = hi_s[s];
        } else {
          valid_range(woff, p.stride_w, p.W, p.OW, lo, hi);
        }
        for (int64_t oh = oh0; oh < oh1; ++oh, dst += p.OW) {
          const int64_t ih = oh * p.stride_h - p.pad_h + r * p.dil_h;
          if (ih < 0 || ih >= p.H) {
            std::fill(dst, dst + p.OW, T(0));
            continue;
          }
          const T* src = xc + ih * p.W + woff;
          for (int64_t ow = 0; ow < lo; ++ow) dst[ow] = T(0);  // a pixel or two of padding
          if (p.stride_w == 1) {
            std::memcpy(dst + lo, src + lo, size_t(hi - lo) * sizeof(T));
          } else if (p.stride_w == 2) {
            for (int64_t ow = lo; ow < hi; ++ow) dst[ow] = src[2 * ow];
          } else {
            for (int64_t ow = lo; ow < hi; ++ow) dst[ow] = src[ow * p.stride_w];
          }
          for (int64_t ow = hi; ow < p.OW; ++ow) dst[ow] = T(0);
        }
      }
    }
  }
}

// dx[c, ih, iw] += col[...] for the taps im2col_band reads (the adjoint).
template <class T>
void col2im_band(const ConvShape& p, const T* __restrict col, int64_t oh0, int64_t oh1, T* __restrict dxg,
                 int64_t ld = 0) {
  const int64_t ncol = ld ? ld : (oh1 - oh0) * p.OW, Cg = p.Cg();
  for (int64_t c = 0; c < Cg; ++c) {
    T* dc = dxg + c * p.H * p.W;
    for (int64_t r = 0; r < p.R; ++r) {
      for (int64_t s = 0; s < p.S; ++s) {
        const T* src = col + ((c * p.R + r) * p.S + s) * ncol;
        const int64_t woff = s * p.dil_w - p.pad_w;
        int64_t lo, hi;
        valid_range(woff, p.stride_w, p.W, p.OW, lo, hi);
        for (int64_t oh = oh0; oh < oh1; ++oh, src += p.OW) {
          const int64_t ih = oh * p.stride_h - p.pad_h + r * p.dil_h;
          if (ih < 0 || ih >= p.H) continue;
          T* dst = dc + ih * p.W + woff;
          if (p.stride_w == 1) {
            for (int64_t ow = lo; ow < hi; ++ow) dst[ow] += src[ow];
          } else {
            for (int64_t ow = lo; ow < hi; ++ow) dst[ow * p.stride_w] += src[ow];
          }
        }
      }
    }
  }
}

bool is_pointwise(const ConvShape& p) {
  return p.R == 1 && p.S == 1 && p.stride_h == 1 && p.stride_w == 1 && p.pad_h == 0 && p.pad_w == 0;
}
bool is_depthwise(const ConvShape& p) { return p.groups > 1 && p.Cg() == 1; }

template <class T>
int64_t band_rows(const ConvShape& p) {
  const int64_t row_bytes = p.Cg() * p.R * p.S * p.OW * int64_t(sizeof(T));
  return std::max<int64_t>(1, std::min<int64_t>(p.OH, kColBudget / std::max<int64_t>(row_bytes, 1)));
}

// ---- GEMM path ------------------------------------------------------------------------------
template <class T>
void conv_forward_image(const ConvArgs<T>& a, int64_t n) {
  const ConvShape& p = a.s;
  const int64_t Cg = p.Cg(), Kg = p.Kg(), CRS = Cg * p.R * p.S, HW = p.H * p.W, OHW = p.OH * p.OW;
  const bool pw = is_pointwise(p);
  const int64_t rows = band_rows<T>(p);
  T* col = pw ? nullptr : workspace<T>(0, size_t(CRS * rows * p.OW));
  for (int64_t g = 0; g < p.groups; ++g) {
    const T* xg = a.x + (n * p.C + g * Cg) * HW;
    const T* wg = a.w + g * Kg * CRS;
    T* yg = a.y + (n * p.K + g * Kg) * OHW;
    auto run = [&](int64_t ncols, const T* B, int64_t ldb, T* C) {
      GemmArgs<T> ga = conv_gemm<T>(Kg, ncols, CRS, false, wg, CRS, false, B, ldb, C, OHW, T(0));
      if (a.bias) {
        ga.bias = a.bias + g * Kg;
        ga.bias_axis = BiasAxis::per_row;
      }
      ga.act = a.act;
      gemm(ga);
    };
    if (pw) {
      run(HW, xg, HW, yg);
      continue;
    }
    for (int64_t oh0 = 0; oh0 < p.OH; oh0 += rows) {
      const int64_t oh1 = std::min(p.OH, oh0 + rows), nc = (oh1 - oh0) * p.OW;
      im2col_band(p, xg, oh0, oh1, col);
      run(nc, col, nc, yg + oh0 * p.OW);
    }
  }
}

// One image's share of the backward pass; dw_part / db_part are this thread's sums.
template <class T>
void conv_backward_image(const ConvArgs<T>& a, int64_t n, T* dw_part, T* db_part) {
  const ConvShape& p = a.s;
  const int64_t Cg = p.Cg(), Kg = p.Kg(), CRS = Cg * p.R * p.S, HW = p.H * p.W, OHW = p.OH * p.OW;
  const bool pw = is_pointwise(p);
  const int64_t rows = band_rows<T>(p);
  const T* gy = a.dy + n * p.K * OHW;
  if (a.act != Activation::identity) {
    T* buf = workspace<T>(1, size_t(p.K * OHW));
    act_grad(a.act, gy, a.y + n * p.K * OHW, buf, p.K * OHW);
    gy = buf;
  }
  if (db_part)
    for (int64_t k = 0; k < p.K; ++k) db_part[k] += T(lane_sum(gy + k * OHW, OHW));
  T* dx = a.dx ? a.dx + n * p.C * HW : nullptr;
  if (dx && !pw) std::fill(dx, dx + p.C * HW, T(0));
  T* col = pw ? nullptr : workspace<T>(0, size_t(CRS * rows * p.OW));
  T* dcol = pw || !dx ? nullptr : workspace<T>(2, size_t(CRS * rows * p.OW));
  for (int64_t g = 0; g < p.groups; ++g) {
    const T* xg = a.x + (n * p.C + g * Cg) * HW;
    const T* wg = a.w + g * Kg * CRS;
    const T* gyg = gy + g * Kg * OHW;
    T* dxg = dx ? dx + g * Cg * HW : nullptr;
    T* dwg = dw_part ? dw_part + g * Kg * CRS : nullptr;
    if (pw) {
      if (dwg) gemm(conv_gemm<T>(Kg, Cg, HW, false, gyg, HW, true, xg, HW, dwg, Cg, T(1)));
      if (dxg) gemm(conv_gemm<T>(Cg, HW, Kg, true, wg, Cg, false, gyg, HW, dxg, HW, T(0)));
      continue;
    }
    for (int64_t oh0 = 0; oh0 < p.OH; oh0 += rows) {
      const int64_t oh1 = std::min(p.OH, oh0 + rows), nc = (oh1 - oh0) * p.OW;
      const T* gband = gyg + oh0 * p.OW;
      if (dwg) {
        im2col_band(p, xg, oh0, oh1, col);
        gemm(conv_gemm<T>(Kg, CRS, nc, false, gband, OHW, true, col, nc, dwg, CRS, T(1)));
      }
      if (dxg) {
        gemm(conv_gemm<T>(CRS, nc, Kg, true, wg, CRS, false, gband, OHW, dcol, nc, T(0)));
        col2im_band(p, dcol, oh0, oh1, dxg);
      }
    }
  }
}

// ---- small images: one GEMM over a band of several images ----------------------------------
// With few output positions per image (OH*OW < kSmallImage) a per-image GEMM
// has a narrow B (e.g. 64 columns for 16x16 -> 8x8) and re-packs the whole
// weight for each image.  Instead the im2col band holds the columns of
// `imgs` consecutive images side by side ([CRS, imgs*OHW], image i at column
// i*OHW), one GEMM computes [Kg, imgs*OHW] into a scratch with the bias and
// activation in its epilogue, and each image's rows are copied into y (a
// [K, imgs*OHW] result is not a 2-D view of NCHW; the copy is one pass over
// the output against 2*CRS flops per element).  Backward gathers the
// (activation-masked) output gradient of the band the same way, then
// dw += gy_band @ col^T (one GEMM with a longer inner dimension) and
// dcol = w^T @ gy_band, scattered per image by col2im.
constexpr int64_t kSmallImage = 256;
// Target columns per band and the cap on the band's bytes.
constexpr int64_t kBandCols = 256;  // 256 / 512 / 1024 measured alike; 256 best for LeNet
constexpr int64_t kBandBudget = 1 << 20;

// Images per band (>= 2 to use this path), so that each of nt threads gets work.
template <class T>
int64_t band_images(const ConvShape& p, int nt) {
  const int64_t OHW = p.OH * p.OW;
  if (is_pointwise(p) || OHW >= kSmallImage || p.N < 2) return 1;
  const int64_t img_bytes = p.Cg() * p.R * p.S * OHW * int64_t(sizeof(T));
  int64_t imgs = std::max<int64_t>(1, (kBandCols + OHW - 1) / OHW);
  imgs = std::min(imgs, std::max<int64_t>(1, kBandBudget / std::max<int64_t>(img_bytes, 1)));
  imgs = std::min(imgs, (p.N + nt - 1) / nt);
  return std::max<int64_t>(1, imgs);
}

// Images [n0, n0 + imgs).
template <class T>
void conv_forward_images(const ConvArgs<T>& a, int64_t n0, int64_t imgs) {
  const ConvShape& p = a.s;
  const int64_t Cg = p.Cg(), Kg = p.Kg(), CRS = Cg * p.R * p.S, HW = p.H * p.W, OHW = p.OH * p.OW;
  const int64_t nc = imgs * OHW;
  T* col = workspace<T>(0, size_t(CRS * nc));
  T* out = workspace<T>(4, size_t(Kg * nc));
  for (int64_t g = 0; g < p.groups; ++g) {
    for (int64_t i = 0; i < imgs; ++i) im2col_band(p, a.x + ((n0 + i) * p.C + g * Cg) * HW, 0, p.OH, col + i * OHW, nc);
    GemmArgs<T> ga = conv_gemm<T>(Kg, nc, CRS, false, a.w + g * Kg * CRS, CRS, false, col, nc, out, nc, T(0));
    if (a.bias) {
      ga.bias = a.bias + g * Kg;
      ga.bias_axis = BiasAxis::per_row;
    }
    ga.act = a.act;
    gemm(ga);
    for (int64_t i = 0; i < imgs; ++i) {
      T* yg = a.y + ((n0 + i) * p.K + g * Kg) * OHW;
      for (int64_t k = 0; k < Kg; ++k) std::memcpy(yg + k * OHW, out + k * nc + i * OHW, size_t(OHW) * sizeof(T));
    }
  }
}

template <class T>
void conv_backward_images(const ConvArgs<T>& a, int64_t n0, int64_t imgs, T* dw_part, T* db_part) {
  const ConvShape& p = a.s;
  const int64_t Cg = p.Cg(), Kg = p.Kg(), CRS = Cg * p.R * p.S, HW = p.H * p.W, OHW = p.OH * p.OW;
  const int64_t nc = imgs * OHW;
  if (a.dx) std::fill(a.dx + n0 * p.C * HW, a.dx + (n0 + imgs) * p.C * HW, T(0));
  T* gyb = workspace<T>(4, size_t(Kg * nc));
  T* col = dw_part ? workspace<T>(0, size_t(CRS * nc)) : nullptr;
  T* dcol = a.dx ? workspace<T>(2, size_t(CRS * nc)) : nullptr;
  for (int64_t g = 0; g < p.groups; ++g) {
    // gy of the band, [Kg, imgs*OHW], through the activation's derivative
    for (int64_t i = 0; i < imgs; ++i) {
      const int64_t off = ((n0 + i) * p.K + g * Kg) * OHW;
      for (int64_t k = 0; k < Kg; ++k)
        act_grad(a.act, a.dy + off + k * OHW, a.y ? a.y + off + k * OHW : a.dy + off + k * OHW,
                 gyb + k * nc + i * OHW, OHW);
    }
    if (db_part)
      for (int64_t k = 0; k < Kg; ++k) db_part[g * Kg + k] += T(lane_sum(gyb + k * nc, nc));
    if (dw_part) {
      for (int64_t i = 0; i < imgs; ++i)
        im2col_band(p, a.x + ((n0 + i) * p.C + g * Cg) * HW, 0, p.OH, col + i * OHW, nc);
      gemm(conv_gemm<T>(Kg, CRS, nc, false, gyb, nc, true, col, nc, dw_part + g * Kg * CRS, CRS, T(1)));
    }
    if (a.dx) {
      gemm(conv_gemm<T>(CRS, nc, Kg, true, a.w + g * Kg * CRS, CRS, false, gyb, nc, dcol, nc, T(0)));
      for (int64_t i = 0; i < imgs; ++i)
        col2im_band(p, dcol + i * OHW, 0, p.OH, a.dx + ((n0 + i) * p.C + g * Cg) * HW, nc);
    }
  }
}

// ---- depthwise: direct kernels ----------------------------------------------------------------
// One output plane k (input plane k / Kg): y = act(b + sum_{r,s} w[r,s] * shifted x rows).
template <class T>
void dw_forward_plane(const ConvArgs<T>& a, int64_t n, int64_t k) {
  const ConvShape& p = a.s;
  const int64_t c = k / p.Kg(), OHW = p.OH * p.OW;
  const T* xp = a.x + (n * p.C + c) * p.H * p.W;
  const T* wk = a.w + k * p.R * p.S;
  T* yp = a.y + (n * p.K + k) * OHW;
  std::fill(yp, yp + OHW, a.bias ? a.bias[k] : T(0));
  for (int64_t oh = 0; oh < p.OH; ++oh) {
    T* __restrict yrow = yp + oh * p.OW;
    for (int64_t r = 0; r < p.R; ++r) {
      const int64_t ih = oh * p.stride_h - p.pad_h + r * p.dil_h;
      if (ih < 0 || ih >= p.H) continue;
      for (int64_t s = 0; s < p.S; ++s) {
        const int64_t woff = s * p.dil_w - p.pad_w;
        int64_t lo, hi;
        valid_range(woff, p.stride_w, p.W, p.OW, lo, hi);
        const T wv = wk[r * p.S + s];
        const T* __restrict xrow = xp + ih * p.W + woff;
        if (p.stride_w == 1) {
          for (int64_t ow = lo; ow < hi; ++ow) yrow[ow] += wv * xrow[ow];
        } else {
          for (int64_t ow = lo; ow < hi; ++ow) yrow[ow] += wv * xrow[ow * p.stride_w];
        }
      }
    }
  }
  if (a.act != Activation::identity)
    for (int64_t i = 0; i < OHW; ++i) yp[i] = act_apply(a.act, yp[i]);
}

// Input plane c of image n and its Kg output planes: dx (overwritten), dw / db sums.
template <class T>
void dw_backward_plane(const ConvArgs<T>& a, int64_t n, int64_t c, T* dw_part, T* db_part) {
  const ConvShape& p = a.s;
  const int64_t Kg = p.Kg(), OHW = p.OH * p.OW;
  const T* xp = a.x + (n * p.C + c) * p.H * p.W;
  T* dxp = a.dx ? a.dx + (n * p.C + c) * p.H * p.W : nullptr;
  if (dxp) std::fill(dxp, dxp + p.H * p.W, T(0));
  T* buf = workspace<T>(1, size_t(OHW));
  for (int64_t k = c * Kg; k < (c + 1) * Kg; ++k) {
    const size_t off = size_t((n * p.K + k) * OHW);
    act_grad(a.act, a.dy + off, a.y ? a.y + off : a.dy + off, buf, OHW);
    if (db_part) db_part[k] += T(lane_sum(buf, OHW));
    const T* wk = a.w + k * p.R * p.S;
    T* dwk = dw_part ? dw_part + k * p.R * p.S : nullptr;
    for (int64_t r = 0; r < p.R; ++r) {
      for (int64_t oh = 0; oh < p.OH; ++oh) {
        const int64_t ih = oh * p.stride_h - p.pad_h + r * p.dil_h;
        if (ih < 0 || ih >= p.H) continue;
        const T* __restrict grow = buf + oh * p.OW;
        for (int64_t s = 0; s < p.S; ++s) {
          const int64_t woff = s * p.dil_w - p.pad_w;
          int64_t lo, hi;
          valid_range(woff, p.stride_w, p.W, p.OW, lo, hi);
          const int64_t base = ih * p.W + woff;
          if (p.stride_w == 1) {
            if (dwk) dwk[r * p.S + s] += T(lane_dot(grow + lo, xp + base + lo, hi - lo));
            if (dxp) {
              const T wv = wk[r * p.S + s];
              T* __restrict drow = dxp + base;
              for (int64_t ow = lo; ow < hi; ++ow) drow[ow] += wv * grow[ow];
            }
          } else {
            T acc = 0;
            const T wv = wk[r * p.S + s];
            for (int64_t ow = lo; ow < hi; ++ow) {
              acc += grow[ow] * xp[base + ow * p.stride_w];
              if (dxp) dxp[base + ow * p.stride_w] += wv * grow[ow];
            }
            if (dwk) dwk[r * p.S + s] += acc;
          }
        }
      }
    }
  }
}

// ---- drivers -----------------------------------------------------------------------------------
// Threads for a convolution of this size (cpu/team.h): a thread pays for
// itself at ~2 MFLOP.
int conv_team(const ConvShape& p, int64_t items) {
  const double flops = 2.0 * double(p.N) * double(p.K) * double(p.OH * p.OW) * double(p.Cg() * p.R * p.S);
  return team_for(items, flops, 2.0e6);
}

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
constexpr int64_t kDirectMaxTaps = 1000; // Cg*R*S up to which the direct kernel is used
constexpr int kDirectNV = 2;            // vectors per chunk: KB*2 accumulators (8 with KB = 4)

// Lanes of the direct kernel: the ISA's SIMD type for float, otherwise a fixed
// array the compiler vectorises (float64, and float in the scalar build).
template <class T>
struct DirectVec {
#if defined(__AVX512F__)
  static constexpr int width = int(64 / sizeof(T));
#elif defined(__AVX2__)
  static constexpr int width = int(32 / sizeof(T));
#else
  static constexpr int width = int(16 / sizeof(T));
#endif
  struct V {
    T v[width];
  };
  static V load(const T* p) {
    V r;
    for (int i = 0; i < width; ++i) r.v[i] = p[i];
    return r;
  }
  static V set1(T x) {
    V r;
    for (int i = 0; i < width; ++i) r.v[i] = x;
    return r;
  }
  static V fma(V a, V b, V c) {
    for (int i = 0; i < width; ++i) c.v[i] += a.v[i] * b.v[i];
    return c;
  }
  static void store(T* p, V a) {
    for (int i = 0; i < width; ++i) p[i] = a.v[i];
  }
  static T hsum(V a) {
    T r = 0;
    for (int i = 0; i < width; ++i) r += a.v[i];
    return r;
  }
  static V relu(V a) {
    for (int i = 0; i < width; ++i) a.v[i] = a.v[i] > T(0) ? a.v[i] : T(0);
    return a;
  }
};
#if defined(FL_HAVE_SIMD)
template <>
struct DirectVec<float> {
  using V = SimdOps::V;
  static constexpr int width = SimdOps::width;
  static V load(const float* p) { return SimdOps::load(p); }
  static V set1(float x) { return V(x); }
#if defined(__AVX512F__)
  static V fma(V a, V b, V c) { return _mm512_fmadd_ps(a.v, b.v, c.v); }
#else
  static V fma(V a, V b, V c) { return _mm256_fmadd_ps(a.v, b.v, c.v); }
#endif
  static void store(float* p, V a) { SimdOps::store(p, a); }
  static float hsum(V a) { return SimdOps::hsum(a); }
  static V relu(V a) { return vmax(a, V(0.0f)); }
};
#endif

// Also requires the chunks to waste at most a quarter of the row: an 8x8
// output with 16-wide chunks computes twice the work (64 -> 64 at 8x8 measured
// 0.57x of torch direct against 0.72x with the GEMM).
template <class T>
bool use_direct(const ConvShape& p) {
  constexpr int64_t L = DirectVec<T>::width * kDirectNV;
  const int64_t waste = (p.OW + L - 1) / L * L - p.OW;
  return p.stride_h == 1 && p.stride_w == 1 && p.dil_h == 1 && p.dil_w == 1 && !is_pointwise(p) &&
         !is_depthwise(p) && p.Cg() * p.R * p.S <= kDirectMaxTaps && 4 * waste <= p.OW;
}

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
// memcpy call per short row were ~8 % of a strided layer).
// interior_only: the border is already zero (a thread's scratch reused for the next image of
// the same call): only the image rows are copied.
template <class T>
void direct_pad_input(const ConvShape& p, const T* x, int64_t n, int64_t g, T* xpad, int64_t HP, int64_t WP,
                      bool interior_only = false) {
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

// (Register blocks of 2-4 output rows sharing each broadcast weight measured the same or slower
// with AVX-512: 32 -> 64 17.0 / 18.5 / 20.6 ms for 1 / 2 / 3 rows; LeNet's first layer 0.73 /
// 0.75 / 0.72 / 0.84 ms for 1-4.)
template <class T, int KB, int SS>
void direct_image(const ConvArgs<T>& a, int64_t n, const T* wpack, const T* bpack) {
  using D = DirectVec<T>;
  using V = typename D::V;
  constexpr int VW = D::width, NV = kDirectNV, L = VW * NV;
  const ConvShape& p = a.s;
  const int64_t Cg = p.Cg(), Kg = p.Kg(), CRS = Cg * p.R * p.S, bpg = (Kg + KB - 1) / KB;
  const int64_t OWc = (p.OW + L - 1) / L * L, HP = p.H + 2 * p.pad_h, WP = OWc + p.S - 1;
  const int64_t S = SS > 0 ? SS : p.S, CR = Cg * p.R;  // S a constant for 3 and 5: the tap loop unrolled
  const bool relu = a.act == Activation::relu;          // applied in registers; others after the store
  int64_t rowoff[kDirectMaxTaps];  // offset of input row (c, r) in the scratch
  for (int64_t cr = 0; cr < CR; ++cr) rowoff[cr] = ((cr / p.R) * HP + cr % p.R) * WP;
  T* xpad = workspace<T>(5, size_t(Cg * HP * WP));
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
#if defined(__AVX512F__)
  static constexpr int kMaxKV = 4, kMPMain = 6;  // 24 accumulators
#else
  static constexpr int kMaxKV = 2, kMPMain = 6;  // 12
#endif
  static constexpr int kMPRest = 8;  // pixels per tile for a narrower remainder (pointers: 8 registers)
};
// Taps per block.  Once the tap loop was unrolled, the longest blocks measured fastest (64 -> 128
// s2: 64 / 144 / 192 / 288 / 576 taps 4.34 / 4.30 / 4.22 / 4.10 / 4.02 ms; 128 -> 128 at 8x8:
// 7.73 ms at 64, 7.21 at 1152): streaming w^T from L2 costs less than the accumulators' round
// trips through y^T and the tile's set-up; blocks only bound that stream for very deep layers.
constexpr int64_t kCvTapBlock = 4096;
constexpr int64_t kCvOutBytes = 256 << 10;  // y^T of a pixel chunk  // 32 / 64 / 128 / 192 / 576 measured: 64 best or equal

// Prefetches, a line each every kLookAheadTaps taps of a tile (whose FMAs leave the memory system
// idle), of the next image's input (into L2, for its zero-bordered copy) and of this image's
// output (for writing: the transpose into y waited on its lines).  64 -> 128 stride-2 forward:
// 3.87 -> 3.79 ms (medians of 8 interleaved runs).  A burst of prefetches per tile instead
// stalled on the line fill buffers and cost as much as it saved.
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
constexpr int64_t kLookAheadTaps = 8;

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
  for (int64_t tb = t0; tb < t1; tb += kLookAheadTaps) {
    if (ahead) ahead->one();
    const int64_t te = std::min(t1, tb + kLookAheadTaps);
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

template <class T>
int64_t cv_kp(const ConvShape& p) {
  constexpr int VW = DirectVec<T>::width;
  return (p.Kg() + VW - 1) / VW * VW;
}

// Worth it when at least 3/4 of the lanes hold a channel (not for LeNet's 6 channels).
template <class T>
bool cv_lanes_ok(const ConvShape& p) {
  return !is_pointwise(p) && !is_depthwise(p) && 4 * p.Kg() >= 3 * cv_kp<T>(p);
}

// y^T[q, :] = bias + sum_t xin[pix[q] + offs[t]] * w^T[t, :] for the nq pixels of a chunk (pix
// readable up to 23 entries past nq), every block of channel vectors and every tap block.
template <class T>
void cv_run(const T* xpad, const int64_t* pq, int64_t nq, const int64_t* offs, int64_t CRS, const T* wg, int64_t KP,
            const T* bg, T* yT, LookAhead* ahead = nullptr) {
  using C = CvFwd<T>;
  constexpr int VW = DirectVec<T>::width;
  const int64_t KV = KP / VW;
  // per block of channel vectors, the tap blocks (measured faster than the reverse order)
  for (int64_t kv0 = 0; kv0 < KV; kv0 += C::kMaxKV) {
    for (int64_t t0 = 0; t0 < CRS; t0 += kCvTapBlock) {
      const int64_t t1 = std::min(CRS, t0 + kCvTapBlock);
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
  // pixel chunks of ~kCvOutBytes of y^T (L2); the last tile of a chunk may run up to 23 pixels
  // past it: the pixel table is padded (repeating pixel 0: computed, never stored)
  const int64_t PCF = std::max<int64_t>(48, kCvOutBytes / int64_t(KP * sizeof(T)) / 24 * 24);
  const std::vector<int64_t> pix = cv_pixel_table(p, WP, OHW + 24), offs = cv_tap_offsets(p, HP, WP, CRS);
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
    T* xpad = workspace<T>(5, size_t(Cg * HP * WP));
    T* yT = workspace<T>(6, size_t((PCF + 24) * KP));
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

// Where the channel-vector forward replaces im2col + GEMM (measured: see conv2d_forward).
template <class T>
bool use_cv_forward(const ConvShape& p) {
  return cv_lanes_ok<T>(p);
}

template <class T>
void conv2d_forward(const ConvArgs<T>& a) {
  const ConvShape& p = a.s;
  if (p.N == 0 || p.K == 0 || p.OH == 0 || p.OW == 0) return;
  if (is_depthwise(p)) {
    const int64_t planes = p.N * p.K;
    std::atomic<int64_t> next{0};
    run_team(conv_team(p, planes), [&](int, int) {
      for (int64_t i; (i = next.fetch_add(1, std::memory_order_relaxed)) < planes;) dw_forward_plane(a, i / p.K, i % p.K);
    });
    return;
  }
  if (use_direct<T>(p)) {
    direct_forward(a);
    return;
  }
  if (use_cv_forward<T>(p)) {
    cv_forward(a);
    return;
  }
  const int64_t imgs = band_images<T>(p, team_size(p.N));
  if (imgs > 1) {
    const int64_t bands = (p.N + imgs - 1) / imgs;
    std::atomic<int64_t> next{0};
    run_team(conv_team(p, bands), [&](int, int) {
      for (int64_t b; (b = next.fetch_add(1, std::memory_order_relaxed)) < bands;)
        conv_forward_images(a, b * imgs, std::min(imgs, p.N - b * imgs));
    });
    return;
  }
  std::atomic<int64_t> next{0};
  run_team(conv_team(p, p.N), [&](int, int) {
    for (int64_t n; (n = next.fetch_add(1, std::memory_order_relaxed)) < p.N;) conv_forward_image(a, n);
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
  constexpr int64_t L = VW * kDirectNV;
  const ConvShape& p = a.s;
  const int64_t Cg = p.Cg(), Kg = p.Kg(), CRS = Cg * p.R * SS, OHW = p.OH * p.OW;
  const int64_t OWc = (p.OW + L - 1) / L * L, HP = p.H + 2 * p.pad_h, WP = OWc + SS - 1;
  T* xpad = workspace<T>(5, size_t(Cg * HP * WP));
  T* gpad = workspace<T>(4, size_t(KB * p.OH * OWc));
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

template <class T>
bool direct_dw_ok(const ConvShape& p) {
  return use_direct<T>(p) && (p.S == 3 || p.S == 5);
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
#if defined(__AVX512F__)
  static constexpr int kMaxKV = 4;  // 32 registers: 4 vectors x 6 taps = 24 accumulators
#else
  static constexpr int kMaxKV = 2;  // 16 registers: 2 x 6 = 12
#endif
  static constexpr int kNTMain = 6;  // taps per tile with kMaxKV vectors
  static constexpr int kNTRest = 8;  // taps per tile for a narrower remainder
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
  for (int64_t q = 0; q < np; ++q) {  // (unrolling this loop by 4 measured no change)
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


constexpr int64_t kCvChunkBytes = 32 << 10;  // 16 / 32 / 64 / 128 KB measured: 32 best or equal

// Taps padded to a multiple of the tile (both tile sizes divide it: 24 = lcm(6, 8)).
inline int64_t cv_dw_taps_pad(int64_t crs) { return (crs + 23) / 24 * 24; }


template <class T>
void cv_dw_image(const ConvArgs<T>& a, const T* g, int64_t n, const int64_t* pix, const int64_t* offs,
                 int64_t taps_pad, T* dwT, bool& borders) {
  using C = CvDw<T>;
  constexpr int VW = C::VW;
  const ConvShape& p = a.s;
  const int64_t Cg = p.Cg(), Kg = p.Kg(), KP = cv_kp<T>(p), OHW = p.OH * p.OW, KV = KP / VW;
  const int64_t HP = p.H + 2 * p.pad_h, WP = p.W + 2 * p.pad_w, CRS = Cg * p.R * p.S;
  // pixels per chunk: g^T of the chunk in ~kChunkBytes (L1)
  const int64_t PC = std::max<int64_t>(16, kCvChunkBytes / int64_t(KP * sizeof(T)));
  T* xpad = workspace<T>(5, size_t(Cg * HP * WP));
  T* gT = workspace<T>(6, size_t(PC * KP));
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

// The input gradient of a stride-1, dilation-1 convolution is itself a forward
// convolution: dx = conv(g, w'), g = dy * act'(y) with K input channels, w'[c, k,
// r, s] = w[k, c, R-1-r, S-1-s] (per group: [Cg, Kg, R, S]) and padding R-1-pad_h,
// S-1-pad_w, which gives back H x W.  When that convolution qualifies for the
// direct kernel (Kg*R*S small) this replaces the dcol GEMM (inner dimension
// only Kg) and the col2im scatter, which dominated the backward pass of the
// narrow ResNet layers.  Returns false (nothing done) when it does not apply.
// The shape of that convolution (valid when direct_dx_ok).
inline ConvShape transposed_shape(const ConvShape& p) {
  ConvShape t = p;
  t.C = p.K;
  t.H = p.OH;
  t.W = p.OW;
  t.K = p.C;
  t.OH = p.H;
  t.OW = p.W;
  t.pad_h = p.R - 1 - p.pad_h;
  t.pad_w = p.S - 1 - p.pad_w;
  return t;
}

template <class T>
bool direct_dx_ok(const ConvShape& p) {
  if (!(p.stride_h == 1 && p.stride_w == 1 && p.dil_h == 1 && p.dil_w == 1 && p.pad_h <= p.R - 1 &&
        p.pad_w <= p.S - 1 && !is_pointwise(p) && !is_depthwise(p)))
    return false;
  const ConvShape t = transposed_shape(p);
  return use_direct<T>(t) || use_cv_forward<T>(t);  // either direct forward kernel
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

// Input gradient of a strided convolution (dilation 1) by its stride phases: input pixels with
// the same (ih + pad_h) mod stride_h and (iw + pad_w) mod stride_w receive the same subset of taps
// (r = a + i*stride_h, s = b + j*stride_w), each from g at (u - i, v - j), u = (ih + pad_h - a) /
// stride_h, v likewise: per phase a stride-1 correlation of the zero-bordered g with a sub-kernel,
// run by the channel-vector kernel above (vectors along the input channels), its outputs
// scattered to the phase's pixels.  Replaces dcol = w^T g (a GEMM over the K channels) + col2im.
template <class T>
bool cv_dx_strided_ok(const ConvShape& p) {
  constexpr int VW = DirectVec<T>::width;
  const int64_t KP = (p.Cg() + VW - 1) / VW * VW;
  // (not 1x1: 3 of its 4 stride-2 phases get no tap, and the im2col path measured ~8 % faster)
  return (p.stride_h > 1 || p.stride_w > 1) && p.dil_h == 1 && p.dil_w == 1 && p.R * p.S > 1 &&
         !is_depthwise(p) && 4 * p.Cg() >= 3 * KP;
}

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
      for (int i = 0; i < 24; ++i) f.pix.push_back(f.pix[0]);  // tiles may run past the last pixel
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
  const int64_t PCF = std::max<int64_t>(48, kCvOutBytes / int64_t(KP * sizeof(T)) / 24 * 24);
  const std::vector<T> zero(size_t(KP), T(0));
  std::atomic<int64_t> next{0};
  run_team(conv_team(p, p.N), [&](int, int) {
    T* gpad = workspace<T>(5, size_t(Kg * HPg * WPg));
    T* yT = workspace<T>(6, size_t((PCF + 24) * KP));
    T* ybuf = workspace<T>(4, size_t(PCF * Cg));
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
            // (reading y^T a column at a time, a line per element, was ~18 % of the layer)
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

template <class T>
void conv2d_backward(const ConvArgs<T>& a) {
  const ConvShape& p = a.s;
  const int64_t wsize = p.K * p.Cg() * p.R * p.S;
  const bool dw_out = a.dw != nullptr, db_out = a.db != nullptr;
  if (!a.accumulate) {
    if (dw_out) std::fill(a.dw, a.dw + wsize, T(0));
    if (db_out) std::fill(a.db, a.db + p.K, T(0));
  }
  if (p.N == 0 || p.K == 0) {
    if (a.dx) std::fill(a.dx, a.dx + p.N * p.C * p.H * p.W, T(0));
    return;
  }
  const bool ddx = a.dx && direct_dx_ok<T>(p), cvdw = dw_out && cv_lanes_ok<T>(p);
  const bool sdx = a.dx && !ddx && cv_dx_strided_ok<T>(p);
  const bool ddw = dw_out && !cvdw && direct_dw_ok<T>(p);
  if (ddx || sdx || ddw || cvdw) {
    // g = dy * act'(y) once for the whole batch when there is an activation
    // (in this thread's workspace, which the team only reads: a fresh vector cost a memset
    // and the page faults of a new mapping every call, ~5 % of a LeNet step)
    const T* g = a.dy;
    const int64_t ysize = p.N * p.K * p.OH * p.OW;
    if (a.act != Activation::identity && a.y) {
      T* gbuf = workspace<T>(7, size_t(ysize));
      act_grad(a.act, a.dy, a.y, gbuf, ysize);
      g = gbuf;
    }
    if (ddx) direct_input_grad(a, g);
    if (sdx) cv_input_grad_strided(a, g);
    if (ddw) direct_weight_grad(a, g);
    if (cvdw) cv_weight_grad(a, g);
    ConvArgs<T> rest = a;  // what is left, by the paths below (dw already zeroed / accumulated into)
    rest.dx = ddx || sdx ? nullptr : a.dx;
    rest.dw = ddw || cvdw ? nullptr : a.dw;
    rest.dy = g;
    rest.act = Activation::identity;
    rest.accumulate = true;  // dw / db were zeroed above when not accumulating
    if (!rest.dx && !rest.dw && rest.db) {  // only the bias gradient left: one pass over g
      const int64_t OHW = p.OH * p.OW;
      for (int64_t k = 0; k < p.K; ++k) {
        double sum = 0;
        for (int64_t n = 0; n < p.N; ++n) sum += lane_sum(g + (n * p.K + k) * OHW, OHW);
        rest.db[k] += T(sum);
      }
    } else if (rest.dx || rest.dw || rest.db) {
      conv2d_backward(rest);
    }
    return;
  }
  const bool dwise = is_depthwise(p);
  const int64_t imgs = dwise ? 1 : band_images<T>(p, team_size(p.N));
  const int64_t items = dwise ? p.N * p.C : (p.N + imgs - 1) / imgs;
  const int nt = conv_team(p, items);
  // Each thread sums its images' dw / db into its own buffer, published here;
  // after a barrier the threads add all buffers into dw / db, each a slice.
  std::vector<T*> parts(size_t(nt), nullptr);
  const int64_t psize = (dw_out ? wsize : 0) + (db_out ? p.K : 0);
  std::atomic<int64_t> next{0};
  run_team(nt, [&](int t, int nthreads) {
    T* part = psize ? workspace<T>(3, size_t(psize)) : nullptr;
    if (part) std::fill(part, part + psize, T(0));
    parts[size_t(t)] = part;
    T* dwp = dw_out ? part : nullptr;
    T* dbp = db_out ? part + (dw_out ? wsize : 0) : nullptr;
    std::exception_ptr err = nullptr;
    try {
      for (int64_t i; (i = next.fetch_add(1, std::memory_order_relaxed)) < items;) {
        if (dwise)
          dw_backward_plane(a, i / p.C, i % p.C, dwp, dbp);
        else if (imgs > 1)
          conv_backward_images(a, i * imgs, std::min(imgs, p.N - i * imgs), dwp, dbp);
        else
          conv_backward_image(a, i, dwp, dbp);
      }
    } catch (...) {
      err = std::current_exception();
    }
#ifdef _OPENMP
    if (nthreads > 1) {
#pragma omp barrier
    }
#endif
    if (err) std::rethrow_exception(err);
    if (!psize) return;
    const int64_t lo = psize * t / nthreads, hi = psize * (t + 1) / nthreads;
    for (int64_t j = lo; j < hi; ++j) {
      T s = 0;
      for (int u = 0; u < nthreads; ++u) s += parts[size_t(u)][j];
      if (j < (dw_out ? wsize : 0))
        a.dw[j] += s;
      else
        a.db[j - (dw_out ? wsize : 0)] += s;
    }
  });
}

template <class T>
void fill_set(ConvKernelSet<T>& s) {
  s.conv2d_forward = &conv2d_forward<T>;
  s.conv2d_backward = &conv2d_backward<T>;
}

}  // namespace

void fill_conv_kernels(CpuKernels& k) {  // the pooling and batch-norm entries: pool_norm_kernels.cpp
  fill_set(k.conv_f32);
  fill_set(k.conv_f64);
}

}  // namespace FL_ISA_NS
}  // namespace fl
