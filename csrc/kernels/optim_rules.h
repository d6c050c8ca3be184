// Every optimizer update rule, written once.  Each rule is a functor built
// from its Hyper (host constants) and applied to one vector of elements:
// V is float / double (scalar reference and CUDA) or a SIMD vector type.
// The scalar, AVX2, AVX-512 and CUDA builds all instantiate these.
#pragma once
#include "core/macros.h"
#include "kernels/optim_hyper.h"
#include "kernels/vec.h"

namespace fl {
namespace FL_ISA_NS {

// g <- (maximize ? -g : g) + wd * p
template <class V>
FL_HD V effective_grad(V g, V p, bool maximize, bool has_wd, V wd) {
  if (maximize) g = -g;
  if (has_wd) g = g + wd * p;
  return g;
}

template <class V> struct SgdRule {
  V lr, wd, momentum, buf_keep, buf_take;
  bool has_wd, has_mom, nesterov, maximize;
  FL_HD explicit SgdRule(const SgdHyper& h)
      : lr(V(h.lr)), wd(V(h.weight_decay)), momentum(V(h.momentum)),
        buf_keep(V(h.first_step ? 0.0 : h.momentum)),
        buf_take(V(h.first_step ? 1.0 : 1.0 - h.dampening)),
        has_wd(h.weight_decay != 0), has_mom(h.momentum != 0), nesterov(h.nesterov),
        maximize(h.maximize) {}
  // state: s0 = momentum_buffer (only when momentum != 0)
  FL_HD void operator()(V& p, V g, V& buf, V&, V&) const {
    V d = effective_grad(g, p, maximize, has_wd, wd);
    if (has_mom) {
      buf = buf_keep * buf + buf_take * d;
      d = nesterov ? d + momentum * buf : buf;
    }
    p = p - lr * d;
  }
};

template <class V> struct AdagradRule {
  V clr, wd, eps;
  bool has_wd, maximize;
  FL_HD explicit AdagradRule(const AdagradHyper& h)
      : clr(V(h.clr)), wd(V(h.weight_decay)), eps(V(h.eps)), has_wd(h.weight_decay != 0),
        maximize(h.maximize) {}
  // s0 = sum
  FL_HD void operator()(V& p, V g, V& sum, V&, V&) const {
    V d = effective_grad(g, p, maximize, has_wd, wd);
    sum = sum + d * d;
    p = p - clr * d / (vsqrt(sum) + eps);
  }
};

template <class V> struct AdadeltaRule {
  V lr, rho, one_m_rho, eps, wd;
  bool has_wd, maximize;
  FL_HD explicit AdadeltaRule(const AdadeltaHyper& h)
      : lr(V(h.lr)), rho(V(h.rho)), one_m_rho(V(1.0 - h.rho)), eps(V(h.eps)),
        wd(V(h.weight_decay)), has_wd(h.weight_decay != 0), maximize(h.maximize) {}
  // s0 = square_avg, s1 = acc_delta
  FL_HD void operator()(V& p, V g, V& sq, V& acc, V&) const {
    V d = effective_grad(g, p, maximize, has_wd, wd);
    sq = rho * sq + one_m_rho * d * d;
    V delta = vsqrt(acc + eps) / vsqrt(sq + eps) * d;
    acc = rho * acc + one_m_rho * delta * delta;
    p = p - lr * delta;
  }
};

template <class V> struct RmspropRule {
  V lr, alpha, one_m_alpha, eps, wd, momentum;
  bool has_wd, has_mom, centered, maximize;
  FL_HD explicit RmspropRule(const RmspropHyper& h)
      : lr(V(h.lr)), alpha(V(h.alpha)), one_m_alpha(V(1.0 - h.alpha)), eps(V(h.eps)),
        wd(V(h.weight_decay)), momentum(V(h.momentum)), has_wd(h.weight_decay != 0),
        has_mom(h.momentum > 0), centered(h.centered), maximize(h.maximize) {}
  // s0 = square_avg, s1 = momentum_buffer (momentum > 0), s2 = grad_avg (centered)
  FL_HD void operator()(V& p, V g, V& sq, V& buf, V& gavg) const {
    V d = effective_grad(g, p, maximize, has_wd, wd);
    sq = alpha * sq + one_m_alpha * d * d;
    V avg;
    if (centered) {
      gavg = gavg + one_m_alpha * (d - gavg);
      avg = vsqrt(sq - gavg * gavg) + eps;
    } else {
      avg = vsqrt(sq) + eps;
    }
    if (has_mom) {
      buf = momentum * buf + d / avg;
      p = p - lr * buf;
    } else {
      p = p - lr * d / avg;
    }
  }
};

template <class V> struct AdamRule {
  V one_m_b1, b2, one_m_b2, step_size, inv_bc2_sqrt, eps, wd, param_scale;
  bool has_wd, has_decay, amsgrad, maximize;
  FL_HD explicit AdamRule(const AdamHyper& h)
      : one_m_b1(V(1.0 - h.beta1)), b2(V(h.beta2)), one_m_b2(V(1.0 - h.beta2)),
        step_size(V(h.step_size)), inv_bc2_sqrt(V(h.inv_bc2_sqrt)), eps(V(h.eps)),
        wd(V(h.weight_decay)), param_scale(V(h.param_scale)), has_wd(h.weight_decay != 0),
        has_decay(h.param_scale != 1.0), amsgrad(h.amsgrad), maximize(h.maximize) {}
  // s0 = exp_avg, s1 = exp_avg_sq, s2 = max_exp_avg_sq (amsgrad)
  FL_HD void operator()(V& p, V g, V& m, V& v, V& vmax_) const {
    if (has_decay) p = p * param_scale;
    V d = effective_grad(g, p, maximize, has_wd, wd);
    m = m + one_m_b1 * (d - m);
    v = b2 * v + one_m_b2 * d * d;
    V vv = v;
    if (amsgrad) {
      vmax_ = vmax(vmax_, v);
      vv = vmax_;
    }
    p = p - step_size * m / (vsqrt(vv) * inv_bc2_sqrt + eps);
  }
};

template <class V> struct AdamaxRule {
  V one_m_b1, b2, clr, eps, wd;
  bool has_wd, maximize;
  FL_HD explicit AdamaxRule(const AdamaxHyper& h)
      : one_m_b1(V(1.0 - h.beta1)), b2(V(h.beta2)), clr(V(h.clr)), eps(V(h.eps)),
        wd(V(h.weight_decay)), has_wd(h.weight_decay != 0), maximize(h.maximize) {}
  // s0 = exp_avg, s1 = exp_inf
  FL_HD void operator()(V& p, V g, V& m, V& u, V&) const {
    V d = effective_grad(g, p, maximize, has_wd, wd);
    m = m + one_m_b1 * (d - m);
    u = vmax(b2 * u, vabs(d) + eps);
    p = p - clr * m / u;
  }
};

template <class V> struct AccsgdRule {
  V eta_g, eta_b, mu, one_m_mu, wd;
  bool has_wd, maximize;
  FL_HD explicit AccsgdRule(const AccsgdHyper& h)
      : eta_g(V(h.eta * (1.0 - h.nu))), eta_b(V(h.eta * h.nu)), mu(V(h.mu)),
        one_m_mu(V(1.0 - h.mu)), wd(V(h.weight_decay)), has_wd(h.weight_decay != 0),
        maximize(h.maximize) {}
  // s0 = momentum_buffer (QHM b, starts at 0)
  FL_HD void operator()(V& p, V g, V& b, V&, V&) const {
    V d = effective_grad(g, p, maximize, has_wd, wd);
    b = mu * b + one_m_mu * d;
    p = p - (eta_g * d + eta_b * b);
  }
};

template <class V> struct SdpropRule {
  V gamma, one_m_gamma, step_size, eps, wd;
  bool has_wd, maximize;
  FL_HD explicit SdpropRule(const SdpropHyper& h)
      : gamma(V(h.gamma)), one_m_gamma(V(1.0 - h.gamma)), step_size(V(h.step_size)),
        eps(V(h.eps)), wd(V(h.weight_decay)), has_wd(h.weight_decay != 0),
        maximize(h.maximize) {}
  // s0 = mean (mu), s1 = variance (c).  Ida et al.: the variance uses the OLD mean.
  FL_HD void operator()(V& p, V g, V& mean, V& var, V&) const {
    V d = effective_grad(g, p, maximize, has_wd, wd);
    V diff = d - mean;
    mean = mean + one_m_gamma * diff;
    var = gamma * (var + one_m_gamma * diff * diff);
    p = p - step_size * d / (vsqrt(var) + eps);
  }
};

template <class V> struct NadamRule {
  V one_m_b1, b2, one_m_b2, bc2, eps, grad_coef, avg_coef, wd, param_scale;
  bool has_wd, has_decay, maximize;
  FL_HD explicit NadamRule(const NadamHyper& h)
      : one_m_b1(V(1.0 - h.beta1)), b2(V(h.beta2)), one_m_b2(V(1.0 - h.beta2)), bc2(V(h.bc2)),
        eps(V(h.eps)), grad_coef(V(h.grad_coef)), avg_coef(V(h.avg_coef)), wd(V(h.weight_decay)),
        param_scale(V(h.param_scale)), has_wd(h.weight_decay != 0), has_decay(h.param_scale != 1.0),
        maximize(h.maximize) {}
  // s0 = exp_avg, s1 = exp_avg_sq
  FL_HD void operator()(V& p, V g, V& m, V& v, V&) const {
    if (has_decay) p = p * param_scale;
    V d = effective_grad(g, p, maximize, has_wd, wd);
    m = m + one_m_b1 * (d - m);
    v = b2 * v + one_m_b2 * d * d;
    V denom = vsqrt(v / bc2) + eps;
    p = p - grad_coef * d / denom;
    p = p - avg_coef * m / denom;
  }
};

template <class V> struct RadamRule {
  V one_m_b1, b2, one_m_b2, eps, step_size, bc2_sqrt, wd, param_scale;
  bool has_wd, has_decay, rectified, maximize;
  FL_HD explicit RadamRule(const RadamHyper& h)
      : one_m_b1(V(1.0 - h.beta1)), b2(V(h.beta2)), one_m_b2(V(1.0 - h.beta2)), eps(V(h.eps)),
        step_size(V(h.step_size)), bc2_sqrt(V(h.bc2_sqrt)), wd(V(h.weight_decay)),
        param_scale(V(h.param_scale)), has_wd(h.weight_decay != 0), has_decay(h.param_scale != 1.0),
        rectified(h.rectified), maximize(h.maximize) {}
  // s0 = exp_avg, s1 = exp_avg_sq
  FL_HD void operator()(V& p, V g, V& m, V& v, V&) const {
    if (has_decay) p = p * param_scale;
    V d = effective_grad(g, p, maximize, has_wd, wd);
    m = m + one_m_b1 * (d - m);
    v = b2 * v + one_m_b2 * d * d;
    if (rectified) {
      p = p - step_size * m * (bc2_sqrt / (vsqrt(v) + eps));
    } else {
      p = p - step_size * m;
    }
  }
};

template <class V> struct RpropRule {
  V etaminus, etaplus, step_min, step_max;
  bool maximize;
  FL_HD explicit RpropRule(const RpropHyper& h)
      : etaminus(V(h.etaminus)), etaplus(V(h.etaplus)), step_min(V(h.step_size_min)),
        step_max(V(h.step_size_max)), maximize(h.maximize) {}
  // s0 = prev (the last gradient, zeroed where its sign flipped), s1 = step_size
  FL_HD void operator()(V& p, V g, V& prev, V& step, V&) const {
    if (maximize) g = -g;
    const V zero(0.0f), one(1.0f);
    const V agree = g * prev;
    step = vmin(vmax(step * vsign_select(agree, etaplus, etaminus, one), step_min), step_max);
    g = vsign_select(agree, g, zero, g);  // a sign flip skips this step's move
    p = p - vsign_select(g, one, -one, zero) * step;
    prev = g;
  }
};

template <class V> struct AsgdRule {
  V eta, param_scale, mu, wd;
  bool has_wd, average_is_param, maximize;
  FL_HD explicit AsgdRule(const AsgdHyper& h)
      : eta(V(h.eta)), param_scale(V(h.param_scale)), mu(V(h.mu)), wd(V(h.weight_decay)),
        has_wd(h.weight_decay != 0), average_is_param(h.mu == 1.0), maximize(h.maximize) {}
  // s0 = ax (the running average of the iterates)
  FL_HD void operator()(V& p, V g, V& ax, V&, V&) const {
    V d = effective_grad(g, p, maximize, has_wd, wd);
    p = p * param_scale;
    p = p - eta * d;
    ax = average_is_param ? p : ax + (p - ax) * mu;
  }
};

}  // namespace FL_ISA_NS
}  // namespace fl
