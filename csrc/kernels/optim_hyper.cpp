#include "kernels/optim_hyper.h"

#include <cmath>
#include <cstdio>
#include <string>

#include "core/errors.h"

namespace fl {
namespace {

std::string num(double x) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%g", x);
  return buf;
}
void check(bool ok, const char* name, double value, const char* what) {
  if (!ok) throw ValueError(std::string("Invalid ") + name + " value: " + num(value) + " (" + what + ")");
}
void check_step(int64_t step) {
  if (step < 1) throw ValueError("Invalid step value: " + std::to_string(step) + " (steps count from 1)");
}
void check_lr(double lr) { check(lr >= 0.0 && std::isfinite(lr), "learning rate", lr, "must be finite and >= 0"); }
void check_wd(double wd) { check(wd >= 0.0 && std::isfinite(wd), "weight_decay", wd, "must be finite and >= 0"); }
void check_eps(double eps) { check(eps >= 0.0 && std::isfinite(eps), "epsilon", eps, "must be finite and >= 0"); }
void check_beta(const char* name, double b) { check(b >= 0.0 && b < 1.0, name, b, "must be in [0, 1)"); }

// Adam and Adamax share their hyperparameters and torch's messages for them.
void check_adam_family(int64_t step, double lr, double beta1, double beta2, double eps, double wd) {
  check_step(step);
  check_lr(lr);
  check_beta("beta parameter at index 0", beta1);
  check_beta("beta parameter at index 1", beta2);
  check_eps(eps);
  check_wd(wd);
}

}  // namespace

SgdHyper make_sgd_hyper(int64_t step, double lr, double momentum, double dampening,
                        double weight_decay, bool nesterov, bool maximize) {
  check_step(step);
  check_lr(lr);
  check(momentum >= 0.0, "momentum", momentum, "must be >= 0");
  check_wd(weight_decay);
  if (nesterov && (momentum <= 0.0 || dampening != 0.0))
    throw ValueError("Nesterov momentum requires a momentum and zero dampening");
  SgdHyper h;
  h.lr = lr; h.momentum = momentum; h.dampening = dampening; h.weight_decay = weight_decay;
  h.nesterov = nesterov; h.maximize = maximize; h.first_step = step == 1;
  return h;
}

AdagradHyper make_adagrad_hyper(int64_t step, double lr, double lr_decay, double weight_decay,
                                double eps, bool maximize) {
  check_step(step);
  check_lr(lr);
  check(lr_decay >= 0.0, "lr_decay", lr_decay, "must be >= 0");
  check_wd(weight_decay);
  check_eps(eps);
  AdagradHyper h;
  h.clr = lr / (1.0 + double(step - 1) * lr_decay);
  h.weight_decay = weight_decay; h.eps = eps; h.maximize = maximize;
  return h;
}

AdadeltaHyper make_adadelta_hyper(double lr, double rho, double eps, double weight_decay,
                                  bool maximize) {
  check_lr(lr);
  check(rho >= 0.0 && rho <= 1.0, "rho", rho, "must be in [0, 1]");
  check_eps(eps);
  check_wd(weight_decay);
  AdadeltaHyper h;
  h.lr = lr; h.rho = rho; h.eps = eps; h.weight_decay = weight_decay; h.maximize = maximize;
  return h;
}

RmspropHyper make_rmsprop_hyper(double lr, double alpha, double eps, double weight_decay,
                                double momentum, bool centered, bool maximize) {
  check_lr(lr);
  check(alpha >= 0.0, "alpha", alpha, "must be >= 0");
  check_eps(eps);
  check_wd(weight_decay);
  check(momentum >= 0.0, "momentum", momentum, "must be >= 0");
  RmspropHyper h;
  h.lr = lr; h.alpha = alpha; h.eps = eps; h.weight_decay = weight_decay; h.momentum = momentum;
  h.centered = centered; h.maximize = maximize;
  return h;
}

AdamHyper make_adam_hyper(int64_t step, double lr, double beta1, double beta2, double eps,
                          double weight_decay, bool amsgrad, bool maximize, bool decoupled) {
  check_adam_family(step, lr, beta1, beta2, eps, weight_decay);
  AdamHyper h;
  h.beta1 = beta1; h.beta2 = beta2; h.eps = eps;
  const double bc1 = 1.0 - std::pow(beta1, double(step));
  const double bc2 = 1.0 - std::pow(beta2, double(step));
  h.step_size = lr / bc1;
  h.inv_bc2_sqrt = 1.0 / std::sqrt(bc2);
  if (decoupled) {
    h.param_scale = 1.0 - lr * weight_decay;
  } else {
    h.weight_decay = weight_decay;
  }
  h.amsgrad = amsgrad; h.maximize = maximize;
  return h;
}

AdamaxHyper make_adamax_hyper(int64_t step, double lr, double beta1, double beta2, double eps,
                              double weight_decay, bool maximize) {
  check_adam_family(step, lr, beta1, beta2, eps, weight_decay);
  AdamaxHyper h;
  h.beta1 = beta1; h.beta2 = beta2; h.eps = eps; h.weight_decay = weight_decay;
  h.clr = lr / (1.0 - std::pow(beta1, double(step)));
  h.maximize = maximize;
  return h;
}

AccsgdHyper make_accsgd_hyper(double lr, double kappa, double xi, double small_const,
                              double weight_decay, bool maximize) {
  check_lr(lr);
  check(kappa >= 1.0, "kappa", kappa, "must be >= 1");
  check(xi > 0.0 && xi <= std::sqrt(kappa), "xi", xi, "must be in (0, sqrt(kappa)]");
  check(small_const > 0.0 && small_const <= 1.0, "small_const", small_const, "must be in (0, 1]");
  check_wd(weight_decay);
  // Kidambi et al.'s two-sequence recurrence is exactly quasi-hyperbolic
  // momentum with these constants (derived in docs/math/optimizers.md, AccSGD).
  const double e = small_const;
  AccsgdHyper h;
  h.eta = lr * e * (1.0 + xi) / (1.0 + e);
  h.nu = (e * xi - 1.0) / (e * (1.0 + xi));
  h.mu = (kappa - e * e * xi) / (kappa + e * xi);
  h.weight_decay = weight_decay; h.maximize = maximize;
  return h;
}

SdpropHyper make_sdprop_hyper(int64_t step, double lr, double gamma, double eps,
                              double weight_decay, bool maximize) {
  check_step(step);
  check_lr(lr);
  check(gamma > 0.0 && gamma < 1.0, "gamma", gamma, "must be in (0, 1)");
  check_eps(eps);
  check_wd(weight_decay);
  SdpropHyper h;
  h.gamma = gamma; h.eps = eps; h.weight_decay = weight_decay; h.maximize = maximize;
  h.step_size = lr * std::sqrt(1.0 - std::pow(gamma, double(step)));
  return h;
}

}  // namespace fl
