// Depthwise convolution (groups > 1, one input channel per group, channel multipliers allowed),
// compiled once per ISA.  Each output plane is a sum of R*S scaled, shifted rows of one input
// plane: a GEMM would have M = 1, so a direct loop over the (contiguous) rows does the work.
#include <algorithm>
#include <atomic>
#include <cstring>
#include <type_traits>
#include <vector>

#include "cpu/conv/conv_internal.h"

namespace fl {
namespace FL_ISA_NS {
namespace conv {

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
  act_inplace(a.act, yp, OHW);
}

// Input plane c of image n and its Kg output planes: dx (overwritten), dw / db sums.
template <class T>
void dw_backward_plane(const ConvArgs<T>& a, int64_t n, int64_t c, T* dw_part, T* db_part) {
  const ConvShape& p = a.s;
  const int64_t Kg = p.Kg(), OHW = p.OH * p.OW;
  const T* xp = a.x + (n * p.C + c) * p.H * p.W;
  T* dxp = a.dx ? a.dx + (n * p.C + c) * p.H * p.W : nullptr;
  if (dxp) std::fill(dxp, dxp + p.H * p.W, T(0));
  T* buf = scratch<T>(Scratch::image_act_grad, size_t(OHW));
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

// ---- instantiations -------------------------------------------------------------------------------
template void dw_forward_plane<float>(const ConvArgs<float>&, int64_t, int64_t);
template void dw_backward_plane<float>(const ConvArgs<float>&, int64_t, int64_t, float*, float*);
template void dw_forward_plane<double>(const ConvArgs<double>&, int64_t, int64_t);
template void dw_backward_plane<double>(const ConvArgs<double>&, int64_t, int64_t, double*, double*);

}  // namespace conv
}  // namespace FL_ISA_NS
}  // namespace fl
