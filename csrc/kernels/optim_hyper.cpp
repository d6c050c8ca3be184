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

NadamHyper make_nadam_hyper(int64_t step, double lr, double beta1, double beta2, double eps,
                            double weight_decay, double momentum_decay, double mu_product,
                            bool decoupled, bool maximize) {
  check_adam_family(step, lr, beta1, beta2, eps, weight_decay);
  check(momentum_decay >= 0.0, "momentum_decay", momentum_decay, "must be >= 0");
  check(mu_product >= 0.0 && mu_product < 1.0, "mu_product", mu_product, "must be in [0, 1)");
  const double t = double(step);
  const double mu = beta1 * (1.0 - 0.5 * std::pow(0.96, t * momentum_decay));
  const double mu_next = beta1 * (1.0 - 0.5 * std::pow(0.96, (t + 1.0) * momentum_decay));
  NadamHyper h;
  h.beta1 = beta1; h.beta2 = beta2; h.eps = eps;
  h.bc2 = 1.0 - std::pow(beta2, t);
  h.grad_coef = lr * (1.0 - mu) / (1.0 - mu_product);
  h.avg_coef = lr * mu_next / (1.0 - mu_product * mu_next);
  if (weight_decay != 0.0) {
    if (decoupled) h.param_scale = 1.0 - lr * weight_decay;
    else h.weight_decay = weight_decay;
  }
  h.maximize = maximize;
  return h;
}

RadamHyper make_radam_hyper(int64_t step, double lr, double beta1, double beta2, double eps,
                            double weight_decay, bool decoupled, bool maximize) {
  check_adam_family(step, lr, beta1, beta2, eps, weight_decay);
  const double t = double(step);
  const double bc1 = 1.0 - std::pow(beta1, t);
  const double bc2 = 1.0 - std::pow(beta2, t);
  // rho_inf: the longest simple-moving-average length the EMA approximates;
  // rho_t: its length at step t.  The variance is tractable once rho_t > 5.
  const double rho_inf = 2.0 / (1.0 - beta2) - 1.0;
  const double rho_t = rho_inf - 2.0 * t * std::pow(beta2, t) / bc2;
  RadamHyper h;
  h.beta1 = beta1; h.beta2 = beta2; h.eps = eps;
  h.rectified = rho_t > 5.0;
  if (h.rectified) {
    const double rect = std::sqrt((rho_t - 4.0) * (rho_t - 2.0) * rho_inf /
                                  ((rho_inf - 4.0) * (rho_inf - 2.0) * rho_t));
    h.step_size = lr * rect / bc1;
    h.bc2_sqrt = std::sqrt(bc2);
  } else {
    h.step_size = lr / bc1;
  }
  if (weight_decay != 0.0) {
    if (decoupled) h.param_scale = 1.0 - lr * weight_decay;
    else h.weight_decay = weight_decay;
  }
  h.maximize = maximize;
  return h;
}

RpropHyper make_rprop_hyper(double etaminus, double etaplus, double step_size_min,
                            double step_size_max, bool maximize) {
  if (!(0.0 < etaminus && etaminus < 1.0 && 1.0 < etaplus))
    throw ValueError("Invalid eta values: " + num(etaminus) + ", " + num(etaplus) +
                     " (need 0 < etaminus < 1 < etaplus)");
  check(step_size_min >= 0.0, "step_size_min", step_size_min, "must be >= 0");
  check(step_size_max >= step_size_min, "step_size_max", step_size_max, "must be >= step_size_min");
  RpropHyper h;
  h.etaminus = etaminus; h.etaplus = etaplus;
  h.step_size_min = step_size_min; h.step_size_max = step_size_max; h.maximize = maximize;
  return h;
}

AsgdHyper make_asgd_hyper(double eta, double mu, double lambd, double weight_decay, bool maximize) {
  check(eta >= 0.0 && std::isfinite(eta), "eta", eta, "must be finite and >= 0");
  check(mu > 0.0 && mu <= 1.0, "mu", mu, "must be in (0, 1]");
  check(lambd >= 0.0 && std::isfinite(lambd), "lambd", lambd, "must be finite and >= 0");
  check_wd(weight_decay);
  AsgdHyper h;
  h.eta = eta; h.param_scale = 1.0 - lambd * eta; h.mu = mu;
  h.weight_decay = weight_decay; h.maximize = maximize;
  return h;
}

}  // namespace fl
