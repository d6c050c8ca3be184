// Argument structs of the resource-allocating network kernels (cpu/ran),
// float64 only.  Equations: docs/math/ran.md.
//
// Parameter vector theta (the EKF's state), one block per unit appended at
// the end so that adding a unit only appends:
//   theta = [ a0 (m) | unit 0: alpha_0 (m), c_0 (d) | unit 1: ... ]
//   p = m + K (m + d)
//   f(x) = a0 + sum_k alpha_k phi_k(x),  phi_k(x) = exp(-|x - c_k|^2 / w_k^2)
// P, the EKF covariance of theta, is stored packed: the lower triangle row by
// row (P_ij, j <= i, at i (i + 1) / 2 + j), which grows by appending rows.
#pragma once
#include <cstdint>

namespace fl {

inline int64_t ran_params(int64_t units, int64_t d, int64_t m) { return m + units * (m + d); }
inline int64_t ran_packed(int64_t p) { return p * (p + 1) / 2; }

enum RanMode : int { kRanLms = 0, kRanEkf = 1 };

// One online step on the sample (x, y): evaluate every unit, e = y - f(x),
// d = min_k |x - c_k| (infinite with no unit).  If d > delta and |e| > epsilon
// a unit is allocated at c = x, alpha = e, w = kappa d (kappa delta when there
// is no unit yet); theta, widths and (EKF) P must have room for one more unit.
// Otherwise LMS (eta, centre_power 1: Platt's /w, 2: the gradient's /w^2) or
// the EKF update (R, Q0; P0 is the variance given to a new unit's parameters).
struct RanStepArgs {
  int64_t units = 0, d = 0, m = 0;
  double* theta = nullptr;
  double* widths = nullptr;
  double* P = nullptr;        // EKF only
  const double* x = nullptr;  // d
  const double* y = nullptr;  // m
  double* err = nullptr;      // out, m: y - f(x) before the update
  double delta = 0, epsilon = 0, kappa = 0, eta = 0;
  double R = 1, P0 = 1, Q0 = 0;
  int mode = kRanLms;
  int centre_power = 1;
  double min_dist = 0;  // out
};

// phi (K), f (m) and the Jacobian A = df/dtheta (m x p, row-major) at x.
struct RanEvalArgs {
  int64_t units = 0, d = 0, m = 0;
  const double* theta = nullptr;
  const double* widths = nullptr;
  const double* x = nullptr;
  double* phi = nullptr;
  double* f = nullptr;
  double* A = nullptr;  // may be nullptr
};

// Y (n x m) = f(X) for X (n x d).
struct RanPredictArgs {
  int64_t units = 0, d = 0, m = 0, n = 0;
  const double* theta = nullptr;
  const double* widths = nullptr;
  const double* X = nullptr;
  double* Y = nullptr;
};

struct RanKernelSet {
  int (*step)(RanStepArgs&) = nullptr;  // 1 when a unit was allocated
  void (*eval)(const RanEvalArgs&) = nullptr;
  void (*predict)(const RanPredictArgs&) = nullptr;
};

}  // namespace fl
