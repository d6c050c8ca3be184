// Python bindings of the fused optimizer steps: fusedlearn._C.<rule>_.
#include <pybind11/pybind11.h>

#include <algorithm>
#include <cmath>

#include "bindings/run_on_device.h"
#include "core/dispatch.h"
#include "bindings/array_interop.h"
#include "kernels/adafactor_args.h"
#include "kernels/optim_hyper.h"
#include "cuda/cuda_api.h"

namespace fl {
namespace py = pybind11;
using namespace pybind11::literals;

namespace {

struct StateArg {
  const char* name;
  py::object list;
  bool required;
  const char* why;  // why it is required, for the message
};

bool skip_for_found_inf(const py::object& found_inf) {
  return !found_inf.is_none() && py::bool_(found_inf);
}

template <class H>
void run_step(RuleId rule, const H& hyper, const py::object& params, const py::object& grads,
              const std::vector<StateArg>& states) {
  std::vector<ListSpec> specs{{"params", params, true}, {"grads", grads, false}};
  for (const auto& s : states) {
    if (s.required && s.list.is_none())
      throw ValueError(std::string(s.name) + " is required " + s.why);
    // A state list the rule does not use is not touched: drop it.
    specs.push_back({s.name, s.required ? s.list : py::object(py::none()), true});
  }
  if (params.is_none()) throw TypeError("params: expected a list of arrays, got None");
  if (grads.is_none()) throw TypeError("grads: expected a list of arrays, got None");
  BorrowedLists bl = borrow_lists(specs);
  if (bl.count == 0) return;
  FlatList f = bl.flat();
  if (on_cuda(bl)) {
    cuda::optim_step(rule, &hyper, bl.dtype, f, bl.device_id);
    return;
  }
  OptimKernel k = cpu_kernels().optim[int(bl.dtype)][rule];
  py::gil_scoped_release nogil;
  k(&hyper, f);
}

}  // namespace

void bind_optim(py::module_& m) {
  m.def(
      "sgd_",
      [](py::object params, py::object grads, py::object momentum_buffers, int64_t step, double lr,
         double momentum, double dampening, double weight_decay, bool nesterov, bool maximize,
         py::object found_inf) {
        if (skip_for_found_inf(found_inf)) return;
        auto h = make_sgd_hyper(step, lr, momentum, dampening, weight_decay, nesterov, maximize);
        run_step(kRule_sgd, h, params, grads, {{"momentum_buffers", momentum_buffers, momentum != 0, "when momentum != 0"}});
      },
      "params"_a, "grads"_a, "momentum_buffers"_a = py::none(), py::kw_only(), "step"_a = 1, "lr"_a = 1e-3,
      "momentum"_a = 0.0, "dampening"_a = 0.0, "weight_decay"_a = 0.0, "nesterov"_a = false, "maximize"_a = false,
      "found_inf"_a = py::none(),
      "SGD (torch.optim.SGD semantics) on lists of arrays, in place. At step 1 the momentum buffer is "
      "set to the gradient, as torch does when it creates it.");

  m.def(
      "adagrad_",
      [](py::object params, py::object grads, py::object state_sums, int64_t step, double lr, double lr_decay,
         double weight_decay, double eps, bool maximize, py::object found_inf) {
        if (skip_for_found_inf(found_inf)) return;
        auto h = make_adagrad_hyper(step, lr, lr_decay, weight_decay, eps, maximize);
        run_step(kRule_adagrad, h, params, grads, {{"state_sums", state_sums, true, ""}});
      },
      "params"_a, "grads"_a, "state_sums"_a, py::kw_only(), "step"_a = 1, "lr"_a = 1e-2, "lr_decay"_a = 0.0,
      "weight_decay"_a = 0.0, "eps"_a = 1e-10, "maximize"_a = false, "found_inf"_a = py::none(),
      "Adagrad (torch.optim.Adagrad semantics) on lists of arrays, in place.");

  m.def(
      "adadelta_",
      [](py::object params, py::object grads, py::object square_avgs, py::object acc_deltas, int64_t step, double lr,
         double rho, double eps, double weight_decay, bool maximize, py::object found_inf) {
        if (skip_for_found_inf(found_inf)) return;
        if (step < 1) throw ValueError("Invalid step value: " + std::to_string(step) + " (steps count from 1)");
        auto h = make_adadelta_hyper(lr, rho, eps, weight_decay, maximize);
        run_step(kRule_adadelta, h, params, grads,
                 {{"square_avgs", square_avgs, true, ""}, {"acc_deltas", acc_deltas, true, ""}});
      },
      "params"_a, "grads"_a, "square_avgs"_a, "acc_deltas"_a, py::kw_only(), "step"_a = 1, "lr"_a = 1.0,
      "rho"_a = 0.9, "eps"_a = 1e-6, "weight_decay"_a = 0.0, "maximize"_a = false, "found_inf"_a = py::none(),
      "Adadelta (torch.optim.Adadelta semantics) on lists of arrays, in place.");

  m.def(
      "rmsprop_",
      [](py::object params, py::object grads, py::object square_avgs, py::object momentum_buffers,
         py::object grad_avgs, int64_t step, double lr, double alpha, double eps, double weight_decay,
         double momentum, bool centered, bool maximize, py::object found_inf) {
        if (skip_for_found_inf(found_inf)) return;
        if (step < 1) throw ValueError("Invalid step value: " + std::to_string(step) + " (steps count from 1)");
        auto h = make_rmsprop_hyper(lr, alpha, eps, weight_decay, momentum, centered, maximize);
        run_step(kRule_rmsprop, h, params, grads,
                 {{"square_avgs", square_avgs, true, ""},
                  {"momentum_buffers", momentum_buffers, momentum > 0, "when momentum > 0"},
                  {"grad_avgs", grad_avgs, centered, "when centered=True"}});
      },
      "params"_a, "grads"_a, "square_avgs"_a, "momentum_buffers"_a = py::none(), "grad_avgs"_a = py::none(),
      py::kw_only(), "step"_a = 1, "lr"_a = 1e-2, "alpha"_a = 0.99, "eps"_a = 1e-8, "weight_decay"_a = 0.0,
      "momentum"_a = 0.0, "centered"_a = false, "maximize"_a = false, "found_inf"_a = py::none(),
      "RMSprop (torch.optim.RMSprop semantics) on lists of arrays, in place.");

  auto adam_like = [](bool decoupled) {
    return [decoupled](py::object params, py::object grads, py::object exp_avgs, py::object exp_avg_sqs,
                       py::object max_exp_avg_sqs, int64_t step, double lr, double beta1, double beta2, double eps,
                       double weight_decay, bool amsgrad, bool maximize, py::object found_inf) {
      if (skip_for_found_inf(found_inf)) return;
      auto h = make_adam_hyper(step, lr, beta1, beta2, eps, weight_decay, amsgrad, maximize, decoupled);
      run_step(kRule_adam, h, params, grads,
               {{"exp_avgs", exp_avgs, true, ""},
                {"exp_avg_sqs", exp_avg_sqs, true, ""},
                {"max_exp_avg_sqs", max_exp_avg_sqs, amsgrad, "when amsgrad=True"}});
    };
  };
  m.def("adam_", adam_like(false), "params"_a, "grads"_a, "exp_avgs"_a, "exp_avg_sqs"_a,
        "max_exp_avg_sqs"_a = py::none(), py::kw_only(), "step"_a = 1, "lr"_a = 1e-3, "beta1"_a = 0.9,
        "beta2"_a = 0.999, "eps"_a = 1e-8, "weight_decay"_a = 0.0, "amsgrad"_a = false, "maximize"_a = false,
        "found_inf"_a = py::none(),
        "Adam (torch.optim.Adam semantics, L2 weight decay added to the gradient) on lists of arrays, in place.");
  m.def("adamw_", adam_like(true), "params"_a, "grads"_a, "exp_avgs"_a, "exp_avg_sqs"_a,
        "max_exp_avg_sqs"_a = py::none(), py::kw_only(), "step"_a = 1, "lr"_a = 1e-3, "beta1"_a = 0.9,
        "beta2"_a = 0.999, "eps"_a = 1e-8, "weight_decay"_a = 1e-2, "amsgrad"_a = false, "maximize"_a = false,
        "found_inf"_a = py::none(),
        "AdamW (torch.optim.AdamW semantics, decoupled weight decay) on lists of arrays, in place.");

  m.def(
      "adamax_",
      [](py::object params, py::object grads, py::object exp_avgs, py::object exp_infs, int64_t step, double lr,
         double beta1, double beta2, double eps, double weight_decay, bool maximize, py::object found_inf) {
        if (skip_for_found_inf(found_inf)) return;
        auto h = make_adamax_hyper(step, lr, beta1, beta2, eps, weight_decay, maximize);
        run_step(kRule_adamax, h, params, grads,
                 {{"exp_avgs", exp_avgs, true, ""}, {"exp_infs", exp_infs, true, ""}});
      },
      "params"_a, "grads"_a, "exp_avgs"_a, "exp_infs"_a, py::kw_only(), "step"_a = 1, "lr"_a = 2e-3,
      "beta1"_a = 0.9, "beta2"_a = 0.999, "eps"_a = 1e-8, "weight_decay"_a = 0.0, "maximize"_a = false,
      "found_inf"_a = py::none(), "Adamax (torch.optim.Adamax semantics) on lists of arrays, in place.");

  m.def(
      "accsgd_",
      [](py::object params, py::object grads, py::object momentum_buffers, int64_t step, double lr, double kappa,
         double xi, double small_const, double weight_decay, bool maximize, py::object found_inf) {
        if (skip_for_found_inf(found_inf)) return;
        if (step < 1) throw ValueError("Invalid step value: " + std::to_string(step) + " (steps count from 1)");
        auto h = make_accsgd_hyper(lr, kappa, xi, small_const, weight_decay, maximize);
        run_step(kRule_accsgd, h, params, grads, {{"momentum_buffers", momentum_buffers, true, ""}});
      },
      "params"_a, "grads"_a, "momentum_buffers"_a, py::kw_only(), "step"_a = 1, "lr"_a = 1e-3, "kappa"_a = 1000.0,
      "xi"_a = 10.0, "small_const"_a = 0.7, "weight_decay"_a = 0.0, "maximize"_a = false,
      "found_inf"_a = py::none(),
      "AccSGD (Kidambi et al. 2018), computed in its exactly equivalent quasi-hyperbolic-momentum form: "
      "one buffer b starting at 0, b <- mu b + (1-mu) g, p <- p - eta((1-nu) g + nu b), with "
      "eta = lr e(1+xi)/(1+e), nu = (e xi - 1)/(e(1+xi)), mu = (kappa - e^2 xi)/(kappa + e xi), e = small_const.");

  m.def(
      "sdprop_",
      [](py::object params, py::object grads, py::object exp_avgs, py::object exp_vars, int64_t step, double lr,
         double gamma, double eps, double weight_decay, bool maximize, py::object found_inf) {
        if (skip_for_found_inf(found_inf)) return;
        auto h = make_sdprop_hyper(step, lr, gamma, eps, weight_decay, maximize);
        run_step(kRule_sdprop, h, params, grads,
                 {{"exp_avgs", exp_avgs, true, ""}, {"exp_vars", exp_vars, true, ""}});
      },
      "params"_a, "grads"_a, "exp_avgs"_a, "exp_vars"_a, py::kw_only(), "step"_a = 1, "lr"_a = 1e-3,
      "gamma"_a = 0.99, "eps"_a = 1e-8, "weight_decay"_a = 0.0, "maximize"_a = false, "found_inf"_a = py::none(),
      "SDProp (Ida et al., IJCAI 2017; official Torch7 code): per element, with d = g - mu (old mean), "
      "mu <- mu + (1-gamma) d, c <- gamma (c + (1-gamma) d^2), p <- p - lr sqrt(1-gamma^t) g / (sqrt(c) + eps).");

  auto check_step = [](int64_t step) {
    if (step < 1) throw ValueError("Invalid step value: " + std::to_string(step) + " (steps count from 1)");
  };

  m.def(
      "nadam_",
      [](py::object params, py::object grads, py::object exp_avgs, py::object exp_avg_sqs, int64_t step, double lr,
         double beta1, double beta2, double eps, double weight_decay, double momentum_decay, double mu_product,
         bool decoupled_weight_decay, bool maximize, py::object found_inf) {
        if (skip_for_found_inf(found_inf)) return;
        auto h = make_nadam_hyper(step, lr, beta1, beta2, eps, weight_decay, momentum_decay, mu_product,
                                  decoupled_weight_decay, maximize);
        run_step(kRule_nadam, h, params, grads,
                 {{"exp_avgs", exp_avgs, true, ""}, {"exp_avg_sqs", exp_avg_sqs, true, ""}});
      },
      "params"_a, "grads"_a, "exp_avgs"_a, "exp_avg_sqs"_a, py::kw_only(), "step"_a = 1, "lr"_a = 2e-3,
      "beta1"_a = 0.9, "beta2"_a = 0.999, "eps"_a = 1e-8, "weight_decay"_a = 0.0, "momentum_decay"_a = 4e-3,
      "mu_product"_a, "decoupled_weight_decay"_a = false, "maximize"_a = false, "found_inf"_a = py::none(),
      "NAdam (torch.optim.NAdam semantics) on lists of arrays, in place. mu_product is the product of the "
      "momentum schedule mu_1 ... mu_step, this step's factor included (torch's state['mu_product'] after "
      "its update).");

  m.def(
      "radam_",
      [](py::object params, py::object grads, py::object exp_avgs, py::object exp_avg_sqs, int64_t step, double lr,
         double beta1, double beta2, double eps, double weight_decay, bool decoupled_weight_decay, bool maximize,
         py::object found_inf) {
        if (skip_for_found_inf(found_inf)) return;
        auto h = make_radam_hyper(step, lr, beta1, beta2, eps, weight_decay, decoupled_weight_decay, maximize);
        run_step(kRule_radam, h, params, grads,
                 {{"exp_avgs", exp_avgs, true, ""}, {"exp_avg_sqs", exp_avg_sqs, true, ""}});
      },
      "params"_a, "grads"_a, "exp_avgs"_a, "exp_avg_sqs"_a, py::kw_only(), "step"_a = 1, "lr"_a = 1e-3,
      "beta1"_a = 0.9, "beta2"_a = 0.999, "eps"_a = 1e-8, "weight_decay"_a = 0.0,
      "decoupled_weight_decay"_a = false, "maximize"_a = false, "found_inf"_a = py::none(),
      "RAdam (torch.optim.RAdam semantics) on lists of arrays, in place.");

  m.def(
      "rprop_",
      [check_step](py::object params, py::object grads, py::object prevs, py::object step_sizes, int64_t step,
                   double etaminus, double etaplus, double step_size_min, double step_size_max, bool maximize,
                   py::object found_inf) {
        if (skip_for_found_inf(found_inf)) return;
        check_step(step);
        auto h = make_rprop_hyper(etaminus, etaplus, step_size_min, step_size_max, maximize);
        run_step(kRule_rprop, h, params, grads, {{"prevs", prevs, true, ""}, {"step_sizes", step_sizes, true, ""}});
      },
      "params"_a, "grads"_a, "prevs"_a, "step_sizes"_a, py::kw_only(), "step"_a = 1, "etaminus"_a = 0.5,
      "etaplus"_a = 1.2, "step_size_min"_a = 1e-6, "step_size_max"_a = 50.0, "maximize"_a = false,
      "found_inf"_a = py::none(),
      "Rprop (torch.optim.Rprop semantics) on lists of arrays, in place. step_sizes start at lr, prevs at 0.");

  m.def(
      "asgd_",
      [check_step](py::object params, py::object grads, py::object axs, int64_t step, double eta, double mu,
                   double lambd, double weight_decay, bool maximize, py::object found_inf) {
        if (skip_for_found_inf(found_inf)) return;
        check_step(step);
        auto h = make_asgd_hyper(eta, mu, lambd, weight_decay, maximize);
        run_step(kRule_asgd, h, params, grads, {{"axs", axs, true, ""}});
      },
      "params"_a, "grads"_a, "axs"_a, py::kw_only(), "step"_a = 1, "eta"_a = 1e-2, "mu"_a = 1.0,
      "lambd"_a = 1e-4, "weight_decay"_a = 0.0, "maximize"_a = false, "found_inf"_a = py::none(),
      "ASGD (torch.optim.ASGD semantics) on lists of arrays, in place: p <- p (1 - lambd eta) - eta g, "
      "ax <- p if mu == 1 else ax + mu (p - ax). eta and mu are this step's values of torch's per-param "
      "state (the caller updates them after the step).");

  m.def(
      "adafactor_",
      [check_step](py::object param, py::object grad, py::object row_var, py::object col_var, py::object variance,
                   int64_t step, double lr, double beta2_decay, double eps1, double eps2, double d,
                   double weight_decay, bool maximize, py::object found_inf) {
        if (skip_for_found_inf(found_inf)) return;
        check_step(step);
        auto bad = [](bool fail, const std::string& what) {
          if (fail) throw ValueError("adafactor_: " + what);
        };
        bad(!(lr >= 0.0), "Learning rate should be >= 0 but is: " + std::to_string(lr));
        bad(!(beta2_decay <= 0.0), "beta2_decay should be <= 0 but is: " + std::to_string(beta2_decay));
        bad(!(eps1 >= 0.0), "epsilon1 should be >= 0 but is: " + std::to_string(eps1));
        bad(!(eps2 >= 0.0), "epsilon2 should be >= 0 but is: " + std::to_string(eps2));
        bad(!(d >= 1.0), "Clipping threshold d should be >= 1 but is: " + std::to_string(d));
        bad(!(weight_decay >= 0.0), "weight_decay should be >= 0 but is: " + std::to_string(weight_decay));
        py::list ps, gs;
        ps.append(param);
        gs.append(grad);
        // torch tensors borrowed through torch's accessors come without a shape: read it from Python
        auto shape_from = [](py::handle obj, ArrayRef& ref) {
          if (ref.shape.empty() && py::hasattr(obj, "shape"))
            for (auto dim : py::tuple(obj.attr("shape"))) ref.shape.push_back(dim.cast<int64_t>());
        };
        ArrayRef shape_of = borrow_array(param, ArgName{"param"}, true);
        shape_from(param, shape_of);
        ArrayRef grad_ref = borrow_array(grad, ArgName{"grad"}, false);
        shape_from(grad, grad_ref);
        bad(grad_ref.shape != shape_of.shape, "grad must have param's shape");
        const bool factored = shape_of.shape.size() > 1;
        std::vector<ListSpec> specs{{"param", ps, true}, {"grad", gs, false}};
        py::list vs;
        if (!factored) {
          bad(variance.is_none(), "variance is required for a tensor of fewer than 2 dimensions");
          vs.append(variance);
          specs.push_back({"variance", vs, true});
        }
        BorrowedLists bl = borrow_lists(specs);
        const bool cuda = on_cuda(bl);
        AdafactorArgs a;
        a.param = bl.ptrs[0][0];
        a.grad = bl.ptrs[1][0];
        a.n = shape_of.numel;
        a.factored = factored;
        ArrayRef rv, cv;
        if (factored) {
          bad(row_var.is_none() || col_var.is_none(), "row_var and col_var are required for a tensor of 2 or more dimensions");
          rv = borrow_array(row_var, ArgName{"row_var"}, true);
          cv = borrow_array(col_var, ArgName{"col_var"}, true);
          const auto& sh = shape_of.shape;
          a.rows = sh[sh.size() - 2];
          a.cols = sh[sh.size() - 1];
          a.batch = (a.rows * a.cols) ? a.n / (a.rows * a.cols) : 0;
          bad(rv.numel != a.batch * a.rows, "row_var must have param's shape with the last dimension 1");
          bad(cv.numel != a.batch * a.cols, "col_var must have param's shape with the second-last dimension 1");
          bad(rv.dtype != bl.dtype || cv.dtype != bl.dtype, "row_var and col_var must have param's dtype");
          bad(rv.device_type != bl.device_type || cv.device_type != bl.device_type ||
                  (cuda && (rv.device_id != bl.device_id || cv.device_id != bl.device_id)),
              "row_var and col_var must be on param's device");
          auto overlaps = [](const ArrayRef& x, const void* y, size_t ybytes) {
            const char* a0 = static_cast<const char*>(x.data);
            const char* b0 = static_cast<const char*>(y);
            return a0 < b0 + ybytes && b0 < a0 + x.nbytes();
          };
          const size_t pbytes = shape_of.nbytes();
          bad(overlaps(rv, a.param, pbytes) || overlaps(rv, a.grad, pbytes) || overlaps(cv, a.param, pbytes) ||
                  overlaps(cv, a.grad, pbytes) || overlaps(rv, cv.data, cv.nbytes()),
              "row_var and col_var must not overlap each other, param or grad");
          a.row_var = rv.data;
          a.col_var = cv.data;
        } else {
          a.variance = bl.ptrs[2][0];
        }
        if (a.n == 0) return;
        const double t = double(step);
        a.beta2_weight = std::pow(t, beta2_decay);
        a.rho = std::min(lr, 1.0 / std::sqrt(t));
        a.eps1 = eps1;
        a.eps2 = eps2;
        a.d = d;
        a.param_scale = 1.0 - lr * weight_decay;
        a.maximize = maximize;
        if (cuda) {
          py::gil_scoped_release nogil;
          cuda::adafactor_step(a, bl.dtype, bl.device_id);
          return;
        }
        auto k = cpu_kernels().adafactor[int(bl.dtype)];
        py::gil_scoped_release nogil;
        k(a);
      },
      "param"_a, "grad"_a, "row_var"_a = py::none(), "col_var"_a = py::none(), "variance"_a = py::none(),
      py::kw_only(), "step"_a = 1, "lr"_a = 1e-2, "beta2_decay"_a = -0.8, "eps1"_a, "eps2"_a = 1e-3, "d"_a = 1.0,
      "weight_decay"_a = 0.0, "maximize"_a = false, "found_inf"_a = py::none(),
      "Adafactor (torch.optim.Adafactor semantics) on one tensor, in place: factored second moments "
      "(row_var [..., R, 1], col_var [..., 1, C]) for 2+ dimensions, a full variance below. eps1 is "
      "torch's eps[0] resolved (its default None means the dtype's machine epsilon).");
}

}  // namespace fl

