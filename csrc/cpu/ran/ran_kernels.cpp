// Resource-allocating network kernels (Platt's RAN with LMS, and RAN-EKF),
// float64, compiled once per ISA.  Layout and equations: kernels/ran_args.h
// and docs/math/ran.md.
//
// The EKF step is the costly part: with p parameters, P is p x p.  It is kept
// packed (lower triangle, row by row) and touched in two passes:
//   1. B = P A^T from the lower triangle alone: row i adds P_ij A_j to B_i
//      (a dot product) and P_ij A_i to B_j (an axpy), j < i;
//   2. after the m x m solve, G = B S^-1 (the Kalman gain), the fused
//      symmetric update P_ij -= sum_l G_il B_jl (j <= i) and P_ii += Q0.
// Only the lower triangle exists, so P is symmetric by construction.
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "cpu/isa_entry.h"
#include "core/macros.h"
#include "kernels/ran_args.h"

namespace fl {
namespace FL_ISA_NS {
namespace {

// phi_k, f and the smallest squared distance; A (m x p) when asked.
double evaluate(int64_t K, int64_t d, int64_t m, const double* __restrict theta,
                const double* __restrict widths, const double* __restrict x, double* __restrict phi,
                double* __restrict f, double* __restrict A) {
  const int64_t p = ran_params(K, d, m), blk = m + d;
  for (int64_t j = 0; j < m; ++j) f[j] = theta[j];
  if (A) {
    std::memset(A, 0, sizeof(double) * size_t(m * p));
    for (int64_t j = 0; j < m; ++j) A[j * p + j] = 1.0;
  }
  double best = std::numeric_limits<double>::infinity();
  for (int64_t k = 0; k < K; ++k) {
    const double* alpha = theta + m + k * blk;
    const double* c = alpha + m;
    double d2 = 0.0;
    for (int64_t i = 0; i < d; ++i) {
      const double t = x[i] - c[i];
      d2 += t * t;
    }
    if (d2 < best) best = d2;
    const double inv_w2 = 1.0 / (widths[k] * widths[k]);
    const double ph = std::exp(-d2 * inv_w2);
    phi[k] = ph;
    for (int64_t j = 0; j < m; ++j) f[j] += alpha[j] * ph;
    if (A) {
      const int64_t off = m + k * blk;
      for (int64_t j = 0; j < m; ++j) {
        double* row = A + j * p + off;
        row[j] = ph;
        const double s = 2.0 * alpha[j] * inv_w2 * ph;
        for (int64_t i = 0; i < d; ++i) row[m + i] = s * (x[i] - c[i]);
      }
    }
  }
  return best;
}

void allocate_unit(RanStepArgs& a, double dist) {
  const int64_t K = a.units, d = a.d, m = a.m;
  double* blk = a.theta + m + K * (m + d);
  for (int64_t j = 0; j < m; ++j) blk[j] = a.err[j];
  for (int64_t i = 0; i < d; ++i) blk[m + i] = a.x[i];
  a.widths[K] = a.kappa * (std::isfinite(dist) ? dist : a.delta);
  if (a.mode == kRanEkf) {
    // append the new parameters' rows: no cross-covariance, P0 on the diagonal
    const int64_t p = ran_params(K, d, m), q = ran_params(K + 1, d, m);
    for (int64_t r = p; r < q; ++r) {
      double* row = a.P + r * (r + 1) / 2;
      std::memset(row, 0, sizeof(double) * size_t(r));
      row[r] = a.P0;
    }
  }
}

void lms_update(RanStepArgs& a, const double* __restrict phi) {
  const int64_t K = a.units, d = a.d, m = a.m, blk = m + d;
  const double* e = a.err;
  const double eta = a.eta;
  for (int64_t k = 0; k < K; ++k) {
    double* alpha = a.theta + m + k * blk;
    double* c = alpha + m;
    double s = 0.0;  // e . alpha_k with the alpha before this step
    for (int64_t j = 0; j < m; ++j) s += e[j] * alpha[j];
    const double w = a.widths[k];
    const double g = 2.0 * eta * phi[k] * s / (a.centre_power == 2 ? w * w : w);
    for (int64_t i = 0; i < d; ++i) c[i] += g * (a.x[i] - c[i]);
    for (int64_t j = 0; j < m; ++j) alpha[j] += eta * e[j] * phi[k];
  }
  for (int64_t j = 0; j < m; ++j) a.theta[j] += eta * e[j];
}

// Inverse of the small symmetric positive definite S (m x m) by Gauss-Jordan.
bool invert_small(int64_t m, double* S, double* inv) {
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < m; ++j) inv[i * m + j] = i == j ? 1.0 : 0.0;
  for (int64_t c = 0; c < m; ++c) {
    int64_t piv = c;
    for (int64_t r = c + 1; r < m; ++r)
      if (std::fabs(S[r * m + c]) > std::fabs(S[piv * m + c])) piv = r;
    if (!(std::fabs(S[piv * m + c]) > 0.0)) return false;
    if (piv != c)
      for (int64_t j = 0; j < m; ++j) {
        std::swap(S[c * m + j], S[piv * m + j]);
        std::swap(inv[c * m + j], inv[piv * m + j]);
      }
    const double s = 1.0 / S[c * m + c];
    for (int64_t j = 0; j < m; ++j) { S[c * m + j] *= s; inv[c * m + j] *= s; }
    for (int64_t r = 0; r < m; ++r) {
      if (r == c) continue;
      const double t = S[r * m + c];
      if (t == 0.0) continue;
      for (int64_t j = 0; j < m; ++j) { S[r * m + j] -= t * S[c * m + j]; inv[r * m + j] -= t * inv[c * m + j]; }
    }
  }
  return true;
}

void ekf_update(RanStepArgs& a, const double* __restrict A, double* __restrict Bt, double* __restrict Gt,
                double* __restrict S, double* __restrict Sinv) {
  const int64_t m = a.m, p = ran_params(a.units, a.d, m);
  double* __restrict P = a.P;
  std::memset(Bt, 0, sizeof(double) * size_t(m * p));
  // pass 1: B = P A^T (Bt is m x p)
  for (int64_t i = 0; i < p; ++i) {
    const double* __restrict row = P + i * (i + 1) / 2;
    for (int64_t l = 0; l < m; ++l) {
      const double* __restrict Al = A + l * p;
      double* __restrict Bl = Bt + l * p;
      const double ai = Al[i];
      double acc = row[i] * ai;
      if (ai != 0.0) {
#pragma omp simd reduction(+ : acc)
        for (int64_t j = 0; j < i; ++j) {
          acc += row[j] * Al[j];
          Bl[j] += row[j] * ai;
        }
      } else {
#pragma omp simd reduction(+ : acc)
        for (int64_t j = 0; j < i; ++j) acc += row[j] * Al[j];
      }
      Bl[i] += acc;
    }
  }
  // S = R I + A B, G = B S^-1
  for (int64_t l = 0; l < m; ++l)
    for (int64_t q = 0; q < m; ++q) {
      double s = l == q ? a.R : 0.0;
      const double* Al = A + l * p;
      const double* Bq = Bt + q * p;
      for (int64_t i = 0; i < p; ++i) s += Al[i] * Bq[i];
      S[l * m + q] = s;
    }
  for (int64_t l = 0; l < m; ++l)  // symmetrise against rounding
    for (int64_t q = 0; q < l; ++q) S[l * m + q] = S[q * m + l] = 0.5 * (S[l * m + q] + S[q * m + l]);
  invert_small(m, S, Sinv);
  for (int64_t l = 0; l < m; ++l) {
    double* Gl = Gt + l * p;
    for (int64_t i = 0; i < p; ++i) Gl[i] = 0.0;
    for (int64_t q = 0; q < m; ++q) {
      const double s = Sinv[q * m + l];
      const double* Bq = Bt + q * p;
      for (int64_t i = 0; i < p; ++i) Gl[i] += Bq[i] * s;
    }
  }
  // theta += G e
  for (int64_t l = 0; l < m; ++l) {
    const double el = a.err[l];
    const double* Gl = Gt + l * p;
    for (int64_t i = 0; i < p; ++i) a.theta[i] += Gl[i] * el;
  }
  // pass 2: P -= G B^T on the lower triangle, P_ii += Q0
  for (int64_t i = 0; i < p; ++i) {
    double* __restrict row = P + i * (i + 1) / 2;
    for (int64_t l = 0; l < m; ++l) {
      const double g = Gt[l * p + i];
      if (g == 0.0) continue;
      const double* __restrict Bl = Bt + l * p;
#pragma omp simd
      for (int64_t j = 0; j <= i; ++j) row[j] -= g * Bl[j];
    }
    row[i] += a.Q0;
  }
}

struct Scratch {
  std::vector<double> buf;
  double* get(size_t n) {
    if (buf.size() < n) buf.resize(n);
    return buf.data();
  }
};
thread_local Scratch scratch;

int ran_step(RanStepArgs& a) {
  const int64_t K = a.units, d = a.d, m = a.m;
  const int64_t p = ran_params(K, d, m);
  const bool ekf = a.mode == kRanEkf;
  const size_t need = size_t(K + m) + (ekf ? size_t(3 * m * p + 2 * m * m) : 0);
  double* phi = scratch.get(need);
  double* f = phi + K;
  double* A = ekf ? f + m : nullptr;
  const double d2 = evaluate(K, d, m, a.theta, a.widths, a.x, phi, f, A);
  double e2 = 0.0;
  for (int64_t j = 0; j < m; ++j) {
    a.err[j] = a.y[j] - f[j];
    e2 += a.err[j] * a.err[j];
  }
  const double dist = std::sqrt(d2);
  a.min_dist = dist;
  if (dist > a.delta && std::sqrt(e2) > a.epsilon) {
    allocate_unit(a, dist);
    return 1;
  }
  if (ekf) {
    double* Bt = A + m * p;
    double* Gt = Bt + m * p;
    double* S = Gt + m * p;
    ekf_update(a, A, Bt, Gt, S, S + m * m);
  } else {
    lms_update(a, phi);
  }
  return 0;
}

void ran_eval(const RanEvalArgs& a) {
  evaluate(a.units, a.d, a.m, a.theta, a.widths, a.x, a.phi, a.f, a.A);
}

void ran_predict(const RanPredictArgs& a) {
  const int64_t K = a.units, d = a.d, m = a.m, blk = m + d;
  // centres transposed (d x K), 1/w^2 and the weights transposed (m x K) so
  // that each sample is one pass over the units, vectorisable across them
  std::vector<double> ct(static_cast<size_t>(d * K)), iw(static_cast<size_t>(K)), at(static_cast<size_t>(m * K)),
      d2(static_cast<size_t>(K));
  for (int64_t k = 0; k < K; ++k) {
    const double* blkp = a.theta + m + k * blk;
    for (int64_t j = 0; j < m; ++j) at[size_t(j * K + k)] = blkp[j];
    for (int64_t i = 0; i < d; ++i) ct[size_t(i * K + k)] = blkp[m + i];
    iw[size_t(k)] = 1.0 / (a.widths[k] * a.widths[k]);
  }
  for (int64_t n = 0; n < a.n; ++n) {
    const double* x = a.X + n * d;
    double* y = a.Y + n * m;
    double* __restrict q = d2.data();
    for (int64_t k = 0; k < K; ++k) q[k] = 0.0;
    for (int64_t i = 0; i < d; ++i) {
      const double xi = x[i];
      const double* __restrict c = ct.data() + i * K;
#pragma omp simd
      for (int64_t k = 0; k < K; ++k) {
        const double t = xi - c[k];
        q[k] += t * t;
      }
    }
    for (int64_t k = 0; k < K; ++k) q[k] = std::exp(-q[k] * iw[size_t(k)]);
    for (int64_t j = 0; j < m; ++j) {
      double s = a.theta[j];
      const double* __restrict al = at.data() + j * K;
      for (int64_t k = 0; k < K; ++k) s += al[k] * q[k];
      y[j] = s;
    }
  }
}

}  // namespace

void fill_ran_kernels(CpuKernels& k) {
  k.ran.step = ran_step;
  k.ran.eval = ran_eval;
  k.ran.predict = ran_predict;
}

}  // namespace FL_ISA_NS
}  // namespace fl
