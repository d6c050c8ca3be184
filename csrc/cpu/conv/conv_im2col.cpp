// im2col + GEMM convolution over bands of output rows (compiled once per ISA).  Also the 1x1,
// stride-1, unpadded ("pointwise") case, where the image itself is the GEMM operand, and small
// output images, where one band spans several images.  The strategy: conv2d.cpp.
#include <algorithm>
#include <atomic>
#include <cstring>
#include <type_traits>
#include <vector>

#include "cpu/conv/conv_internal.h"

namespace fl {
namespace FL_ISA_NS {
namespace conv {

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

template <class T>
int64_t band_rows(const ConvShape& p) {
  const int64_t row_bytes = p.Cg() * p.R * p.S * p.OW * int64_t(sizeof(T));
  return std::max<int64_t>(1, std::min<int64_t>(p.OH, tuning::kColBudget / std::max<int64_t>(row_bytes, 1)));
}

// ---- GEMM path ------------------------------------------------------------------------------
// The activation the GEMM epilogue may apply: relu (exact).  tanh and sigmoid are applied after
// the GEMM with conv_common's act_inplace (kernels/fast_math.h), so that a convolution rounds
// its activation the same way whichever path computed it.
inline Activation gemm_epilogue_act(Activation a) {
  return a == Activation::relu ? a : Activation::identity;
}

template <class T>
void conv_forward_image(const ConvArgs<T>& a, int64_t n) {
  const ConvShape& p = a.s;
  const int64_t Cg = p.Cg(), Kg = p.Kg(), CRS = Cg * p.R * p.S, HW = p.H * p.W, OHW = p.OH * p.OW;
  const bool pw = is_pointwise(p);
  const int64_t rows = band_rows<T>(p);
  T* col = pw ? nullptr : scratch<T>(Scratch::im2col_band, size_t(CRS * rows * p.OW));
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
      ga.act = gemm_epilogue_act(a.act);
      gemm(ga);
      if (ga.act != a.act)  // tanh / sigmoid: through kernels/fast_math.h, as on every other path
        for (int64_t k = 0; k < Kg; ++k) act_inplace(a.act, C + k * OHW, ncols);
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
    T* buf = scratch<T>(Scratch::image_act_grad, size_t(p.K * OHW));
    act_grad(a.act, gy, a.y + n * p.K * OHW, buf, p.K * OHW);
    gy = buf;
  }
  if (db_part)
    for (int64_t k = 0; k < p.K; ++k) db_part[k] += T(lane_sum(gy + k * OHW, OHW));
  T* dx = a.dx ? a.dx + n * p.C * HW : nullptr;
  if (dx && !pw) std::fill(dx, dx + p.C * HW, T(0));
  T* col = pw ? nullptr : scratch<T>(Scratch::im2col_band, size_t(CRS * rows * p.OW));
  T* dcol = pw || !dx ? nullptr : scratch<T>(Scratch::col2im_band, size_t(CRS * rows * p.OW));
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
// Images per band (>= 2 to use this path), so that each of nt threads gets work.
template <class T>
int64_t band_images(const ConvShape& p, int nt) {
  const int64_t OHW = p.OH * p.OW;
  if (is_pointwise(p) || OHW >= tuning::kSmallImage || p.N < 2) return 1;
  const int64_t img_bytes = p.Cg() * p.R * p.S * OHW * int64_t(sizeof(T));
  int64_t imgs = std::max<int64_t>(1, (tuning::kBandCols + OHW - 1) / OHW);
  imgs = std::min(imgs, std::max<int64_t>(1, tuning::kBandBudget / std::max<int64_t>(img_bytes, 1)));
  imgs = std::min(imgs, (p.N + nt - 1) / nt);
  return std::max<int64_t>(1, imgs);
}

// Images [n0, n0 + imgs).
template <class T>
void conv_forward_images(const ConvArgs<T>& a, int64_t n0, int64_t imgs) {
  const ConvShape& p = a.s;
  const int64_t Cg = p.Cg(), Kg = p.Kg(), CRS = Cg * p.R * p.S, HW = p.H * p.W, OHW = p.OH * p.OW;
  const int64_t nc = imgs * OHW;
  T* col = scratch<T>(Scratch::im2col_band, size_t(CRS * nc));
  T* out = scratch<T>(Scratch::band_outputs, size_t(Kg * nc));
  for (int64_t g = 0; g < p.groups; ++g) {
    for (int64_t i = 0; i < imgs; ++i) im2col_band(p, a.x + ((n0 + i) * p.C + g * Cg) * HW, 0, p.OH, col + i * OHW, nc);
    GemmArgs<T> ga = conv_gemm<T>(Kg, nc, CRS, false, a.w + g * Kg * CRS, CRS, false, col, nc, out, nc, T(0));
    if (a.bias) {
      ga.bias = a.bias + g * Kg;
      ga.bias_axis = BiasAxis::per_row;
    }
    ga.act = gemm_epilogue_act(a.act);
    gemm(ga);
    if (ga.act != a.act) act_inplace(a.act, out, Kg * nc);  // as in conv_forward_image
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
  T* gyb = scratch<T>(Scratch::band_outputs, size_t(Kg * nc));
  T* col = dw_part ? scratch<T>(Scratch::im2col_band, size_t(CRS * nc)) : nullptr;
  T* dcol = a.dx ? scratch<T>(Scratch::col2im_band, size_t(CRS * nc)) : nullptr;
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

// ---- instantiations -------------------------------------------------------------------------------
template int64_t band_images<float>(const ConvShape&, int);
template void conv_forward_image<float>(const ConvArgs<float>&, int64_t);
template void conv_forward_images<float>(const ConvArgs<float>&, int64_t, int64_t);
template void conv_backward_image<float>(const ConvArgs<float>&, int64_t, float*, float*);
template void conv_backward_images<float>(const ConvArgs<float>&, int64_t, int64_t, float*, float*);
template int64_t band_images<double>(const ConvShape&, int);
template void conv_forward_image<double>(const ConvArgs<double>&, int64_t);
template void conv_forward_images<double>(const ConvArgs<double>&, int64_t, int64_t);
template void conv_backward_image<double>(const ConvArgs<double>&, int64_t, double*, double*);
template void conv_backward_images<double>(const ConvArgs<double>&, int64_t, int64_t, double*, double*);

}  // namespace conv
}  // namespace FL_ISA_NS
}  // namespace fl
