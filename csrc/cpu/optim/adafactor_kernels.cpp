// Adafactor's fused step on one tensor (kernels/adafactor_args.h; equations in
// docs/math/optimizers.md, "Adafactor"), compiled once per ISA.  Three passes
// over memory:
//   1. read p and g: sum of p^2 (RMS of p before the step, for alpha) and, per
//      matrix, the row and column sums of g^2 (factored) or the variance lerp;
//   2. read g: the sum of the squared unscaled update U (its RMS clips the step);
//   3. read g and p, write p: p <- p (1 - lr wd) - alpha / max(1, RMS(U)/d) U.
// U is recomputed in pass 3 instead of being stored: one read of g costs less
// than a write and a read of U.  Sums are accumulated in double, in kLanes
// independent partials so that the compiler vectorizes them without
// reassociating (the lanes are summed at the end).
#include <algorithm>
#include <cmath>
#include <vector>

#include "cpu/isa_entry.h"
#include "kernels/adafactor_args.h"

namespace fl {
namespace FL_ISA_NS {
namespace {

constexpr int kLanes = 8;

// torch's lerp: exact at both ends (weight 0 and 1).
template <class T>
inline T lerp(T a, T b, T w) {
  return w < T(0.5) ? a + w * (b - a) : b - (b - a) * (T(1) - w);
}

inline double lane_sum(const double* acc) {
  double s = 0;
  for (int j = 0; j < kLanes; ++j) s += acc[j];
  return s;
}

// Pass 1 on one row of a factored matrix: psq += p^2, returns sum g^2, col[c] += g^2.
template <class T>
double row_pass1(const T* __restrict p, const T* __restrict g, int64_t C, double* __restrict col,
                 double* __restrict psq_out) {
  double acc[kLanes] = {}, psq_acc[kLanes] = {};  // local: no aliasing with col, so the lanes vectorize
  int64_t c = 0;
  for (; c + kLanes <= C; c += kLanes)
    for (int j = 0; j < kLanes; ++j) {
      const double x = double(g[c + j]) * double(g[c + j]);
      acc[j] += x;
      col[c + j] += x;
      psq_acc[j] += double(p[c + j]) * double(p[c + j]);
    }
  for (; c < C; ++c) {
    const double x = double(g[c]) * double(g[c]);
    acc[0] += x;
    col[c] += x;
    psq_acc[0] += double(p[c]) * double(p[c]);
  }
  for (int j = 0; j < kLanes; ++j) psq_out[j] += psq_acc[j];
  return lane_sum(acc);
}

// U of one element: G / sqrt(max(R C / m, eps1^2)) in torch's order of operations.
template <class T>
inline T factored_u(T gs, T rr, T cc, T m, T eps1_sq) {
  return gs / std::sqrt(std::max(rr * cc / m, eps1_sq));
}

template <class T>
void adafactor_step(const AdafactorArgs& a) {
  T* p = static_cast<T*>(a.param);
  const T* g = static_cast<const T*>(a.grad);
  const int64_t n = a.n;
  const T sign = a.maximize ? T(-1) : T(1);
  const T w = T(a.beta2_weight);
  const T eps1 = T(a.eps1), eps1_sq = T(a.eps1 * a.eps1);
  const T scale = T(a.param_scale);
  double psq_acc[kLanes] = {}, usq_acc[kLanes] = {};

  if (a.factored) {
    T* row = static_cast<T*>(a.row_var);
    T* col = static_cast<T*>(a.col_var);
    const int64_t R = a.rows, C = a.cols;
    std::vector<double> col_sum(static_cast<size_t>(C), 0.0);
    std::vector<T> row_mean(static_cast<size_t>(a.batch), T(0));  // max(mean(row_var), eps1) per matrix
    for (int64_t b = 0; b < a.batch; ++b) {  // pass 1
      const T* gb = g + b * R * C;
      const T* pb = p + b * R * C;
      T* rb = row + b * R;
      T* cb = col + b * C;
      std::fill(col_sum.begin(), col_sum.end(), 0.0);
      double row_total = 0;
      for (int64_t r = 0; r < R; ++r) {
        const double s = row_pass1(pb + r * C, gb + r * C, C, col_sum.data(), psq_acc);
        rb[r] = lerp(rb[r], T(s / double(C)), w);
        row_total += double(rb[r]);
      }
      for (int64_t c = 0; c < C; ++c) cb[c] = lerp(cb[c], T(col_sum[size_t(c)] / double(R)), w);
      row_mean[size_t(b)] = std::max(T(row_total / double(R)), eps1);
    }
    for (int64_t b = 0; b < a.batch; ++b) {  // pass 2
      const T* gb = g + b * R * C;
      const T* cb = col + b * C;
      const T m = row_mean[size_t(b)];
      for (int64_t r = 0; r < R; ++r) {
        const T* gr = gb + r * C;
        const T rr = row[b * R + r];
        int64_t c = 0;
        for (; c + kLanes <= C; c += kLanes)
          for (int j = 0; j < kLanes; ++j) {
            const T u = factored_u(gr[c + j], rr, cb[c + j], m, eps1_sq);
            usq_acc[j] += double(u) * double(u);
          }
        for (; c < C; ++c) {
          const T u = factored_u(gr[c], rr, cb[c], m, eps1_sq);
          usq_acc[0] += double(u) * double(u);
        }
      }
    }
    const double alpha = std::max(a.eps2, std::sqrt(lane_sum(psq_acc)) / std::sqrt(double(n))) * a.rho;
    const double denom = std::max(1.0, std::sqrt(lane_sum(usq_acc)) / (std::sqrt(double(n)) * a.d));
    const T coef = T(alpha / denom) * sign;  // the sign of maximize folded into the step
    for (int64_t b = 0; b < a.batch; ++b) {  // pass 3
      const T* gb = g + b * R * C;
      T* pb = p + b * R * C;
      const T* cb = col + b * C;
      const T m = row_mean[size_t(b)];
      for (int64_t r = 0; r < R; ++r) {
        const T rr = row[b * R + r];
        const T* gr = gb + r * C;
        T* pr = pb + r * C;
        for (int64_t c = 0; c < C; ++c) pr[c] = pr[c] * scale - coef * factored_u(gr[c], rr, cb[c], m, eps1_sq);
      }
    }
  } else {
    T* v = static_cast<T*>(a.variance);
    int64_t i = 0;
    for (; i + kLanes <= n; i += kLanes)  // passes 1 and 2 in one: U needs only this element's v
      for (int j = 0; j < kLanes; ++j) {
        const T gi = g[i + j];
        psq_acc[j] += double(p[i + j]) * double(p[i + j]);
        const T vi = lerp(v[i + j], gi * gi, w);
        v[i + j] = vi;
        const T u = gi / std::sqrt(std::max(vi, eps1_sq));
        usq_acc[j] += double(u) * double(u);
      }
    for (; i < n; ++i) {
      const T gi = g[i];
      psq_acc[0] += double(p[i]) * double(p[i]);
      const T vi = lerp(v[i], gi * gi, w);
      v[i] = vi;
      const T u = gi / std::sqrt(std::max(vi, eps1_sq));
      usq_acc[0] += double(u) * double(u);
    }
    const double alpha = std::max(a.eps2, std::sqrt(lane_sum(psq_acc)) / std::sqrt(double(n))) * a.rho;
    const double denom = std::max(1.0, std::sqrt(lane_sum(usq_acc)) / (std::sqrt(double(n)) * a.d));
    const T coef = T(alpha / denom) * sign;
    for (i = 0; i < n; ++i) p[i] = p[i] * scale - coef * (g[i] / std::sqrt(std::max(v[i], eps1_sq)));
  }
}

}  // namespace

void fill_adafactor_kernels(CpuKernels& k) {
  k.adafactor[int(DType::f32)] = &adafactor_step<float>;
  k.adafactor[int(DType::f64)] = &adafactor_step<double>;
}

}  // namespace FL_ISA_NS
}  // namespace fl
