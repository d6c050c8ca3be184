// Host-side hyperparameters of every optimizer rule, already reduced to the
// per-step constants the element-wise update needs (bias corrections, decayed
// learning rates ...).  Plain data: shared by CPU and CUDA paths.
#pragma once
#include <cstdint>

namespace fl {

// The rules, in one list: X(name, RuleType, HyperType, number of state streams)
#define FL_OPTIM_RULES(X)                        \
  X(sgd, SgdRule, SgdHyper, 1)                   \
  X(adagrad, AdagradRule, AdagradHyper, 1)       \
  X(adadelta, AdadeltaRule, AdadeltaHyper, 2)    \
  X(rmsprop, RmspropRule, RmspropHyper, 3)       \
  X(adam, AdamRule, AdamHyper, 3)                \
  X(adamax, AdamaxRule, AdamaxHyper, 2)          \
  X(accsgd, AccsgdRule, AccsgdHyper, 1)          \
  X(sdprop, SdpropRule, SdpropHyper, 2)          \
  X(nadam, NadamRule, NadamHyper, 2)             \
  X(radam, RadamRule, RadamHyper, 2)             \
  X(rprop, RpropRule, RpropHyper, 2)             \
  X(asgd, AsgdRule, AsgdHyper, 1)

constexpr int kMaxStates = 3;

struct SgdHyper {
  double lr = 0, weight_decay = 0, momentum = 0, dampening = 0;
  bool nesterov = false, maximize = false, first_step = true;
};
struct AdagradHyper {
  double clr = 0, weight_decay = 0, eps = 0;  // clr = lr / (1 + (step-1) lr_decay)
  bool maximize = false;
};
struct AdadeltaHyper {
  double lr = 0, rho = 0, eps = 0, weight_decay = 0;
  bool maximize = false;
};
struct RmspropHyper {
  double lr = 0, alpha = 0, eps = 0, weight_decay = 0, momentum = 0;
  bool centered = false, maximize = false;
};
struct AdamHyper {
  double beta1 = 0, beta2 = 0, step_size = 0, inv_bc2_sqrt = 0, eps = 0;
  double weight_decay = 0;  // coupled (Adam) L2 term
  double param_scale = 1;   // decoupled (AdamW) decay: p *= 1 - lr*wd
  bool amsgrad = false, maximize = false;
};
struct AdamaxHyper {
  double beta1 = 0, beta2 = 0, clr = 0, eps = 0, weight_decay = 0;
  bool maximize = false;
};
// AccSGD (Kidambi et al. 2018) in its exact quasi-hyperbolic-momentum form:
// b <- mu b + (1-mu) g ; p <- p - eta ((1-nu) g + nu b).
struct AccsgdHyper {
  double eta = 0, nu = 0, mu = 0, weight_decay = 0;
  bool maximize = false;
};
struct SdpropHyper {
  double gamma = 0, step_size = 0, eps = 0, weight_decay = 0;  // step_size = lr sqrt(1-gamma^t)
  bool maximize = false;
};

// NAdam (Dozat 2016) with torch's momentum schedule
// mu_t = beta1 (1 - 0.5 * 0.96^(t * momentum_decay)):
// p <- p - grad_coef * g / d - avg_coef * m / d,  d = sqrt(v / bc2) + eps,
// grad_coef = lr (1 - mu_t) / (1 - prod_{i<=t} mu_i),
// avg_coef = lr mu_{t+1} / (1 - prod_{i<=t+1} mu_i).
struct NadamHyper {
  double beta1 = 0, beta2 = 0, bc2 = 1, eps = 0, grad_coef = 0, avg_coef = 0;
  double weight_decay = 0;  // coupled L2 term
  double param_scale = 1;   // decoupled decay: p *= 1 - lr*wd
  bool maximize = false;
};
// RAdam (Liu et al. 2020): rectified Adam while the SMA length rho_t > 5,
// bias-corrected momentum SGD before.
struct RadamHyper {
  double beta1 = 0, beta2 = 0, eps = 0, step_size = 0;  // lr r_t / bc1, or lr / bc1
  double bc2_sqrt = 1;
  double weight_decay = 0, param_scale = 1;
  bool rectified = false, maximize = false;
};
// Rprop (Riedmiller & Braun 1993), torch's variant (no weight backtracking).
struct RpropHyper {
  double etaminus = 0, etaplus = 0, step_size_min = 0, step_size_max = 0;
  bool maximize = false;
};
// ASGD (Polyak & Juditsky 1992; torch.optim.ASGD): the step's eta and mu are
// per-parameter scalars the Python side keeps.
struct AsgdHyper {
  double eta = 0, param_scale = 1, mu = 1, weight_decay = 0;  // param_scale = 1 - lambd eta
  bool maximize = false;
};

}  // namespace fl

namespace fl {
// Builders: validate the user's hyperparameters (ValueError, as torch.optim
// does) and reduce them to the per-step constants.  `step` counts from 1.
SgdHyper make_sgd_hyper(int64_t step, double lr, double momentum, double dampening,
                        double weight_decay, bool nesterov, bool maximize);
AdagradHyper make_adagrad_hyper(int64_t step, double lr, double lr_decay, double weight_decay,
                                double eps, bool maximize);
AdadeltaHyper make_adadelta_hyper(double lr, double rho, double eps, double weight_decay,
                                  bool maximize);
RmspropHyper make_rmsprop_hyper(double lr, double alpha, double eps, double weight_decay,
                                double momentum, bool centered, bool maximize);
AdamHyper make_adam_hyper(int64_t step, double lr, double beta1, double beta2, double eps,
                          double weight_decay, bool amsgrad, bool maximize, bool decoupled);
AdamaxHyper make_adamax_hyper(int64_t step, double lr, double beta1, double beta2, double eps,
                              double weight_decay, bool maximize);
AccsgdHyper make_accsgd_hyper(double lr, double kappa, double xi, double small_const,
                              double weight_decay, bool maximize);
SdpropHyper make_sdprop_hyper(int64_t step, double lr, double gamma, double eps,
                              double weight_decay, bool maximize);
// mu_product: prod_{i<=step} mu_i, this step's factor included (the caller keeps it).
NadamHyper make_nadam_hyper(int64_t step, double lr, double beta1, double beta2, double eps,
                            double weight_decay, double momentum_decay, double mu_product,
                            bool decoupled, bool maximize);
RadamHyper make_radam_hyper(int64_t step, double lr, double beta1, double beta2, double eps,
                            double weight_decay, bool decoupled, bool maximize);
RpropHyper make_rprop_hyper(double etaminus, double etaplus, double step_size_min,
                            double step_size_max, bool maximize);
AsgdHyper make_asgd_hyper(double eta, double mu, double lambd, double weight_decay, bool maximize);
}  // namespace fl
