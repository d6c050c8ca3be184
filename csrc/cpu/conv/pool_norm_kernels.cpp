// Pooling (max with indices, average with torch's divisor rules) and batch norm
// (training / evaluation, running statistics), forward and backward, compiled
// once per instruction set, float32 and float64 from one template.  Arguments:
// kernels/conv_args.h; shared helpers: cpu/conv/conv_common.h.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <type_traits>
#include <vector>

#include "kernels/conv_args.h"
#include "cpu/conv/conv_common.h"
#include "cpu/isa_entry.h"
#include "kernels/vec.h"

namespace fl {
namespace FL_ISA_NS {
namespace {
using namespace conv_common;

// ---- pooling ----------------------------------------------------------------------------------
template <class Body>
void for_planes(int64_t planes, int64_t work_per_plane, Body&& body) {
  const int nt = team_for(planes, double(planes) * double(work_per_plane), double(1 << 17));
  std::atomic<int64_t> next{0};
  run_team(nt, [&](int, int) {
    for (int64_t i; (i = next.fetch_add(1, std::memory_order_relaxed)) < planes;) body(i);
  });
}

// One window tap over a run of n outputs (input stride SW, or sw when SW is 0):
// best = max(best, x) with NaN winning, tap = t where x won.  Kept apart with
// restrict pointers and not inlined: inlined into the tap loop, GCC fuses the
// taps and keeps the branches instead of vectorising (compares and blends).
template <class T, int SW>
__attribute__((noinline)) void max_tap(const T* __restrict xt, T* __restrict best, int32_t* __restrict tap, int64_t n, int64_t sw, int32_t t) {
  const int64_t st = SW > 0 ? SW : sw;
  for (int64_t j = 0; j < n; ++j) {
    const T v = xt[j * st], b = best[j];
    const bool take = (v > b) | (v != v);
    best[j] = take ? v : b;
    tap[j] = take ? t : tap[j];
  }
}

// 2x2 windows, stride 2, inside the image (the usual CNN pooling): one output row of a plane
// at a time, the four taps compared in order with selects (the same first-maximum / NaN rule as
// max_tap), the flat index computed from the winning tap.  One loop the compiler vectorises
// (stride-2 loads become permutes); the general path below calls max_tap on runs of OW
// outputs, which for LeNet's 14- and 5-wide rows is mostly call overhead and scalar tails.
template <class T>
void max_pool_2x2s2_row(const T* __restrict r0, const T* __restrict r1, T* __restrict y, int64_t* __restrict ix,
                        int64_t n, int64_t base, int64_t W) {
  for (int64_t j = 0; j < n; ++j) {
    T best = r0[2 * j];
    int64_t at = base + 2 * j;
    const T v1 = r0[2 * j + 1], v2 = r1[2 * j], v3 = r1[2 * j + 1];
    bool take = (v1 > best) | (v1 != v1);
    best = take ? v1 : best;
    at = take ? base + 2 * j + 1 : at;
    take = (v2 > best) | (v2 != v2);
    best = take ? v2 : best;
    at = take ? base + W + 2 * j : at;
    take = (v3 > best) | (v3 != v3);
    best = take ? v3 : best;
    at = take ? base + W + 2 * j + 1 : at;
    y[j] = best;
    ix[j] = at;
  }
}

#if defined(__AVX512F__)
// float with AVX-512: 16 outputs per step, masked loads / stores for the tail of a row (LeNet's
// rows are 14 and 5 wide: the loop above would run them in its scalar remainder, with branches).
template <>
void max_pool_2x2s2_row<float>(const float* __restrict r0, const float* __restrict r1, float* __restrict y,
                               int64_t* __restrict ix, int64_t n, int64_t base, int64_t W) {
  const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
  const __m512i odd = _mm512_add_epi32(even, _mm512_set1_epi32(1));
  const __m512i lane2 = _mm512_slli_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15), 1);
  for (int64_t j = 0; j < n; j += 16) {
    const int64_t m = std::min<int64_t>(16, n - j);
    const __mmask16 mo = __mmask16((1u << m) - 1);
    const __mmask16 m_lo = __mmask16(m >= 8 ? 0xFFFF : (1u << (2 * m)) - 1);
    const __mmask16 m_hi = __mmask16(m <= 8 ? 0 : (1u << (2 * (m - 8))) - 1);
    auto pairs = [&](const float* r, __m512& e, __m512& o) {
      const __m512 lo = _mm512_maskz_loadu_ps(m_lo, r + 2 * j), hi = _mm512_maskz_loadu_ps(m_hi, r + 2 * j + 16);
      e = _mm512_permutex2var_ps(lo, even, hi);
      o = _mm512_permutex2var_ps(lo, odd, hi);
    };
    __m512 v0, v1, v2, v3;
    pairs(r0, v0, v1);
    pairs(r1, v2, v3);
    // offset of the winner from the window's first tap: 0, 1, W, W + 1 (first maximum; a NaN wins)
    __m512 best = v0;
    __m512i off = _mm512_setzero_si512();
    __mmask16 t = _mm512_cmp_ps_mask(v1, best, _CMP_GT_OQ) | _mm512_cmp_ps_mask(v1, v1, _CMP_UNORD_Q);
    best = _mm512_mask_mov_ps(best, t, v1);
    off = _mm512_mask_mov_epi32(off, t, _mm512_set1_epi32(1));
    t = _mm512_cmp_ps_mask(v2, best, _CMP_GT_OQ) | _mm512_cmp_ps_mask(v2, v2, _CMP_UNORD_Q);
    best = _mm512_mask_mov_ps(best, t, v2);
    off = _mm512_mask_mov_epi32(off, t, _mm512_set1_epi32(int32_t(W)));
    t = _mm512_cmp_ps_mask(v3, best, _CMP_GT_OQ) | _mm512_cmp_ps_mask(v3, v3, _CMP_UNORD_Q);
    best = _mm512_mask_mov_ps(best, t, v3);
    off = _mm512_mask_mov_epi32(off, t, _mm512_set1_epi32(int32_t(W + 1)));
    _mm512_mask_storeu_ps(y + j, mo, best);
    off = _mm512_add_epi32(off, lane2);  // + 2 * lane
    const __m512i b = _mm512_set1_epi64(base + 2 * j);
    const __m512i i_lo = _mm512_add_epi64(b, _mm512_cvtepi32_epi64(_mm512_castsi512_si256(off)));
    const __m512i i_hi = _mm512_add_epi64(b, _mm512_cvtepi32_epi64(_mm512_extracti64x4_epi64(off, 1)));
    _mm512_mask_storeu_epi64(ix + j, __mmask8(mo & 0xFF), i_lo);
    _mm512_mask_storeu_epi64(ix + j + 8, __mmask8(mo >> 8), i_hi);
  }
}
#endif

template <class T>
void max_pool2d_forward(const PoolArgs<T>& a) {
  const PoolShape& p = a.s;
  const int64_t HW = p.H * p.W, OHW = p.OH * p.OW;
  if (p.kh == 2 && p.kw == 2 && p.stride_h == 2 && p.stride_w == 2 && p.pad_h == 0 && p.pad_w == 0 &&
      p.dil_h == 1 && p.dil_w == 1 && p.OH > 0 && p.OW > 0 && 2 * p.OH <= p.H && 2 * p.OW <= p.W) {
    for_planes(p.planes, OHW * 4, [&](int64_t pl) {
      const T* x = a.x + pl * HW;
      for (int64_t oh = 0; oh < p.OH; ++oh) {
        const int64_t base = 2 * oh * p.W;
        max_pool_2x2s2_row(x + base, x + base + p.W, a.y + pl * OHW + oh * p.OW, a.indices + pl * OHW + oh * p.OW,
                           p.OW, base, p.W);
      }
    });
    return;
  }
  // Windows that never leave the image (no padding, dilation 1, the common
  // 2x2 / stride 2): no clipping, a branch-free running maximum.  Same result
  // as the general loop: the first maximum wins, a NaN (the last one) propagates.
  const bool inside = p.pad_h == 0 && p.pad_w == 0 && p.dil_h == 1 && p.dil_w == 1 && p.OH > 0 && p.OW > 0 &&
                      (p.OH - 1) * p.stride_h + p.kh <= p.H && (p.OW - 1) * p.stride_w + p.kw <= p.W;
  if (inside) {
    // Runs of up to kRun outputs of a row, one window tap at a time over the
    // run: the selects then become blends (random data would mispredict a
    // branch per compare); the winning tap is kept as int32 (float-width lanes)
    // and turned into the flat index at the end.
    constexpr int64_t kRun = 64;
    std::vector<int64_t> toff(size_t(p.kh * p.kw));
    for (int64_t r = 0; r < p.kh; ++r)
      for (int64_t s = 0; s < p.kw; ++s) toff[size_t(r * p.kw + s)] = r * p.W + s;
    // the stride as a compile-time constant for the usual 1 and 2, so the
    // run loops vectorise (strided loads become shuffles, selects blends)
    auto pool = [&](auto sw_c) {
    const int64_t sw = decltype(sw_c)::value > 0 ? int64_t(decltype(sw_c)::value) : p.stride_w;
    for_planes(p.planes, OHW * p.kh * p.kw, [&](int64_t pl) {
      const T* __restrict x = a.x + pl * HW;
      T* __restrict y = a.y + pl * OHW;
      int64_t* __restrict ix = a.indices + pl * OHW;
      T best[kRun];
      int32_t tap[kRun];
      for (int64_t oh = 0; oh < p.OH; ++oh) {
        for (int64_t ow0 = 0; ow0 < p.OW; ow0 += kRun) {
          const int64_t n = std::min(kRun, p.OW - ow0), base = oh * p.stride_h * p.W + ow0 * sw;
          const T* __restrict x0 = x + base;
          for (int64_t j = 0; j < n; ++j) {
            best[j] = x0[j * sw];
            tap[j] = 0;
          }
          for (int32_t t = 1; t < int32_t(p.kh * p.kw); ++t) {
            const T* __restrict xt = x0 + toff[size_t(t)];
            max_tap<T, decltype(sw_c)::value>(xt, best, tap, n, sw, t);
          }
          for (int64_t j = 0; j < n; ++j) {
            y[oh * p.OW + ow0 + j] = best[j];
            ix[oh * p.OW + ow0 + j] = base + j * sw + toff[size_t(tap[j])];
          }
        }
      }
    });
    };
    if (p.stride_w == 2)
      pool(std::integral_constant<int, 2>());
    else if (p.stride_w == 1)
      pool(std::integral_constant<int, 1>());
    else
      pool(std::integral_constant<int, 0>());
    return;
  }
  // general windows: the column ranges are the same for every row and plane
  std::vector<int64_t> wr(size_t(2 * p.OW));
  for (int64_t ow = 0; ow < p.OW; ++ow) valid_range(ow * p.stride_w - p.pad_w, p.dil_w, p.W, p.kw, wr[2 * ow], wr[2 * ow + 1]);
  for_planes(p.planes, OHW * p.kh * p.kw, [&](int64_t pl) {
    const T* x = a.x + pl * HW;
    T* y = a.y + pl * OHW;
    int64_t* ix = a.indices + pl * OHW;
    for (int64_t oh = 0; oh < p.OH; ++oh) {
      int64_t h0 = oh * p.stride_h - p.pad_h;
      int64_t hlo, hhi;  // window taps r with 0 <= h0 + r*dil < H
      valid_range(h0, p.dil_h, p.H, p.kh, hlo, hhi);
      for (int64_t ow = 0; ow < p.OW; ++ow) {
        const int64_t w0 = ow * p.stride_w - p.pad_w;
        const int64_t wlo = wr[2 * ow], whi = wr[2 * ow + 1];
        T best = -std::numeric_limits<T>::infinity();
        int64_t bi = (h0 + hlo * p.dil_h) * p.W + (w0 + wlo * p.dil_w);
        for (int64_t r = hlo; r < hhi; ++r) {
          const int64_t row = (h0 + r * p.dil_h) * p.W;
          for (int64_t s = wlo; s < whi; ++s) {
            const int64_t idx = row + w0 + s * p.dil_w;
            const T v = x[idx];
            if (v > best || std::isnan(v)) {  // NaN propagates, as torch
              best = v;
              bi = idx;
            }
          }
        }
        y[oh * p.OW + ow] = best;
        ix[oh * p.OW + ow] = bi;
      }
    }
  });
}

template <class T>
void max_pool2d_backward(const PoolArgs<T>& a) {
  const PoolShape& p = a.s;
  const int64_t HW = p.H * p.W, OHW = p.OH * p.OW;
  for_planes(p.planes, HW + OHW, [&](int64_t pl) {
    T* dx = a.dx + pl * HW;
    const T* dy = a.dy + pl * OHW;
    const int64_t* ix = a.indices + pl * OHW;
    std::fill(dx, dx + HW, T(0));
    for (int64_t i = 0; i < OHW; ++i) {
      const int64_t j = ix[i];
      if (j >= 0 && j < HW) dx[j] += dy[i];  // indices come from outside: never write out of the plane
    }
  });
}

// torch's window and divisor: the window is clipped to the padded image for
// count_include_pad's divisor, then to the image for the taps.
struct AvgWindow {
  int64_t h0, h1, w0, w1, div;
};
inline AvgWindow avg_window(const PoolShape& p, int64_t oh, int64_t ow) {
  int64_t h0 = oh * p.stride_h - p.pad_h, w0 = ow * p.stride_w - p.pad_w;
  int64_t h1 = std::min(h0 + p.kh, p.H + p.pad_h), w1 = std::min(w0 + p.kw, p.W + p.pad_w);
  const int64_t pool = (h1 - h0) * (w1 - w0);
  h0 = std::max<int64_t>(h0, 0);
  w0 = std::max<int64_t>(w0, 0);
  h1 = std::min(h1, p.H);
  w1 = std::min(w1, p.W);
  int64_t div = p.divisor_override > 0 ? p.divisor_override : p.count_include_pad ? pool : (h1 - h0) * (w1 - w0);
  if (h0 >= h1 || w0 >= w1) div = 0;  // empty window: output 0
  return {h0, h1, w0, w1, div};
}

template <class T>
void avg_pool2d_forward(const PoolArgs<T>& a) {
  const PoolShape& p = a.s;
  const int64_t HW = p.H * p.W, OHW = p.OH * p.OW;
  for_planes(p.planes, OHW * p.kh * p.kw, [&](int64_t pl) {
    const T* x = a.x + pl * HW;
    T* y = a.y + pl * OHW;
    for (int64_t oh = 0; oh < p.OH; ++oh)
      for (int64_t ow = 0; ow < p.OW; ++ow) {
        const AvgWindow w = avg_window(p, oh, ow);
        if (w.div == 0) {
          y[oh * p.OW + ow] = T(0);
          continue;
        }
        double s = 0;
        for (int64_t h = w.h0; h < w.h1; ++h) s += lane_sum(x + h * p.W + w.w0, w.w1 - w.w0);
        y[oh * p.OW + ow] = T(s / double(w.div));
      }
  });
}

template <class T>
void avg_pool2d_backward(const PoolArgs<T>& a) {
  const PoolShape& p = a.s;
  const int64_t HW = p.H * p.W, OHW = p.OH * p.OW;
  for_planes(p.planes, OHW * p.kh * p.kw, [&](int64_t pl) {
    T* dx = a.dx + pl * HW;
    const T* dy = a.dy + pl * OHW;
    std::fill(dx, dx + HW, T(0));
    for (int64_t oh = 0; oh < p.OH; ++oh)
      for (int64_t ow = 0; ow < p.OW; ++ow) {
        const AvgWindow w = avg_window(p, oh, ow);
        if (w.div == 0) continue;
        const T g = dy[oh * p.OW + ow] / T(w.div);
        for (int64_t h = w.h0; h < w.h1; ++h)
          for (int64_t j = w.w0; j < w.w1; ++j) dx[h * p.W + j] += g;
      }
  });
}

// ---- batch norm ---------------------------------------------------------------------------------
// Channels split over threads; each channel is N planes of HW values.
template <class T>
void batch_norm_forward(const BatchNormArgs<T>& a) {
  const int64_t N = a.N, C = a.C, HW = a.HW, M = N * HW;
  for_planes(C, M * 3, [&](int64_t c) {
    double mean, invstd;
    if (a.training) {
      double s = 0;
      for (int64_t n = 0; n < N; ++n) s += lane_sum(a.x + (n * C + c) * HW, HW);
      mean = M ? s / double(M) : 0.0;
      double q = 0;
      for (int64_t n = 0; n < N; ++n) q += lane_sq_centered(a.x + (n * C + c) * HW, T(mean), HW);
      // exact centring: q above used mean rounded to T; correct by the rounding (sum (x - m')^2 = q - M (m - m')^2)
      const double dm = mean - double(T(mean));
      q = std::max(0.0, q - double(M) * dm * dm);
      const double var = M ? q / double(M) : 0.0;
      invstd = 1.0 / std::sqrt(var + a.eps);
      a.save_mean[c] = T(mean);
      a.save_invstd[c] = T(invstd);
      if (a.running_mean) a.running_mean[c] = T((1.0 - a.momentum) * double(a.running_mean[c]) + a.momentum * mean);
      if (a.running_var && M > 1)
        a.running_var[c] = T((1.0 - a.momentum) * double(a.running_var[c]) + a.momentum * q / double(M - 1));
    } else {
      mean = double(a.running_mean[c]);
      invstd = 1.0 / std::sqrt(double(a.running_var[c]) + a.eps);
    }
    const double wv = a.weight ? double(a.weight[c]) : 1.0;
    const T scale = T(wv * invstd);
    const T shift = T((a.bias ? double(a.bias[c]) : 0.0) - mean * wv * invstd);
    const bool relu = a.act == Activation::relu;
    for (int64_t n = 0; n < N; ++n) {
      const T* __restrict x = a.x + (n * C + c) * HW;
      T* __restrict y = a.y + (n * C + c) * HW;
      if (relu) {
        for (int64_t i = 0; i < HW; ++i) {
          const T v = x[i] * scale + shift;
          y[i] = v > T(0) ? v : T(0);
        }
      } else {
        for (int64_t i = 0; i < HW; ++i) y[i] = x[i] * scale + shift;
      }
    }
  });
}

template <class T>
void batch_norm_backward(const BatchNormArgs<T>& a) {
  const int64_t N = a.N, C = a.C, HW = a.HW, M = N * HW;
  for_planes(C, M * 3, [&](int64_t c) {
    double mean, invstd;
    if (a.training) {
      mean = double(a.save_mean[c]);
      invstd = double(a.save_invstd[c]);
    } else {
      mean = double(a.running_mean[c]);
      invstd = 1.0 / std::sqrt(double(a.running_var[c]) + a.eps);
    }
    // g: dy, masked by the ReLU (written into dx, which is then rewritten in place)
    const T* g0 = a.dy;
    if (a.act == Activation::relu && a.dx) {
      for (int64_t n = 0; n < N; ++n) {
        const int64_t o = (n * C + c) * HW;
        act_grad(Activation::relu, a.dy + o, a.y + o, a.dx + o, HW);
      }
      g0 = a.dx;
    }
    double sg = 0, sgx = 0;
    const T tm = T(mean);
    T* gbuf = nullptr;
    for (int64_t n = 0; n < N; ++n) {
      const int64_t o = (n * C + c) * HW;
      const T* g = g0 + o;
      if (a.act == Activation::relu && !a.dx) {  // no dx to use as scratch
        gbuf = scratch<T>(Scratch::image_act_grad, size_t(HW));
        act_grad(Activation::relu, a.dy + o, a.y + o, gbuf, HW);
        g = gbuf;
      }
      sg += lane_sum(g, HW);
      sgx += lane_dot_centered(g, a.x + o, tm, HW);
    }
    sgx += sg * (double(tm) - mean);  // centre on the exact mean
    if (a.dbias) a.dbias[c] = T((a.accumulate ? double(a.dbias[c]) : 0.0) + sg);
    if (a.dweight) a.dweight[c] = T((a.accumulate ? double(a.dweight[c]) : 0.0) + sgx * invstd);
    if (!a.dx) return;
    const double wv = a.weight ? double(a.weight[c]) : 1.0;
    const double k = wv * invstd;
    // training: dx = k (g - sg/M - (x - mean) invstd^2 sgx / M);  eval: dx = k g
    const T ka = T(k);
    const T kb = a.training && M ? T(-k * sg / double(M) + k * invstd * invstd * sgx / double(M) * mean) : T(0);
    const T kx = a.training && M ? T(-k * invstd * invstd * sgx / double(M)) : T(0);
    for (int64_t n = 0; n < N; ++n) {
      const int64_t o = (n * C + c) * HW;
      const T* g = g0 + o;  // may be dx itself (the ReLU-masked gradient)
      const T* x = a.x + o;
      T* dx = a.dx + o;
      for (int64_t i = 0; i < HW; ++i) dx[i] = ka * g[i] + kx * x[i] + kb;
    }
  });
}

template <class T>
void fill_set(ConvKernelSet<T>& s) {
  s.max_pool2d_forward = &max_pool2d_forward<T>;
  s.max_pool2d_backward = &max_pool2d_backward<T>;
  s.avg_pool2d_forward = &avg_pool2d_forward<T>;
  s.avg_pool2d_backward = &avg_pool2d_backward<T>;
  s.batch_norm_forward = &batch_norm_forward<T>;
  s.batch_norm_backward = &batch_norm_backward<T>;
}

}  // namespace

void fill_pool_norm_kernels(CpuKernels& k) {
  fill_set(k.conv_f32);
  fill_set(k.conv_f64);
}

}  // namespace FL_ISA_NS
}  // namespace fl
