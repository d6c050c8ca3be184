// Python bindings of the resource-allocating network kernels (cpu/ran):
// _C.ran_step, _C.ran_eval, _C.ran_predict.  Float64, C-contiguous numpy
// arrays only; fusedlearn.ran owns the buffers and their growth.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <string>

#include "core/dispatch.h"
#include "core/errors.h"
#include "kernels/ran_args.h"

namespace fl {
namespace py = pybind11;
using namespace pybind11::literals;

namespace {

py::array checked(const py::object& o, const char* name, int64_t min_size, bool writable) {
  if (!py::isinstance<py::array>(o)) throw TypeError(std::string(name) + ": expected a numpy array");
  py::array a = py::reinterpret_borrow<py::array>(o);
  if (!a.dtype().is(py::dtype::of<double>())) throw TypeError(std::string(name) + ": expected float64");
  if (!(a.flags() & py::array::c_style)) throw ValueError(std::string(name) + ": must be C-contiguous");
  if (writable && !a.writeable()) throw ValueError(std::string(name) + ": must be writable");
  if (int64_t(a.size()) < min_size)
    throw ValueError(std::string(name) + ": has " + std::to_string(a.size()) + " elements, needs at least " +
                     std::to_string(min_size));
  return a;
}

void check_dims(int64_t units, int64_t d, int64_t m) {
  if (units < 0 || d < 1 || m < 1) throw ValueError("ran: need units >= 0, d >= 1, m >= 1");
}

}  // namespace

void bind_ran(py::module_& m) {
  m.def(
      "ran_step",
      [](py::object theta, py::object widths, py::object P, py::object x, py::object y, int64_t units, int64_t d,
         int64_t mo, double delta, double epsilon, double kappa, double eta, double R, double P0, double Q0,
         bool ekf, int centre_power) {
        check_dims(units, d, mo);
        if (centre_power != 1 && centre_power != 2) throw ValueError("ran_step: centre_power must be 1 or 2");
        const int64_t q = ran_params(units + 1, d, mo);
        py::array th = checked(theta, "theta", q, true);
        py::array w = checked(widths, "widths", units + 1, true);
        py::array xa = checked(x, "x", d, false), ya = checked(y, "y", mo, false);
        if (int64_t(xa.size()) != d) throw ValueError("x: expected " + std::to_string(d) + " elements");
        if (int64_t(ya.size()) != mo) throw ValueError("y: expected " + std::to_string(mo) + " elements");
        py::array Pa;
        if (ekf) Pa = checked(P, "P", ran_packed(q), true);
        py::array_t<double> err(mo);
        RanStepArgs a;
        a.units = units; a.d = d; a.m = mo;
        a.theta = static_cast<double*>(th.mutable_data());
        a.widths = static_cast<double*>(w.mutable_data());
        a.P = ekf ? static_cast<double*>(Pa.mutable_data()) : nullptr;
        a.x = static_cast<const double*>(xa.data());
        a.y = static_cast<const double*>(ya.data());
        a.err = err.mutable_data();
        a.delta = delta; a.epsilon = epsilon; a.kappa = kappa; a.eta = eta;
        a.R = R; a.P0 = P0; a.Q0 = Q0;
        a.mode = ekf ? kRanEkf : kRanLms;
        a.centre_power = centre_power;
        int added;
        {
          py::gil_scoped_release nogil;
          added = cpu_kernels().ran.step(a);
        }
        return py::make_tuple(bool(added), err, a.min_dist);
      },
      "theta"_a, "widths"_a, "P"_a, "x"_a, "y"_a, "units"_a, "d"_a, "m"_a, "delta"_a, "epsilon"_a, "kappa"_a,
      "eta"_a, "R"_a, "P0"_a, "Q0"_a, "ekf"_a, "centre_power"_a,
      "One online RAN / RAN-EKF step in place (docs/math/ran.md); returns (allocated, error, min distance).");
  m.def(
      "ran_eval",
      [](py::object theta, py::object widths, int64_t units, int64_t d, int64_t mo, py::object x) {
        check_dims(units, d, mo);
        const int64_t p = ran_params(units, d, mo);
        py::array th = checked(theta, "theta", p, false);
        py::array w = checked(widths, "widths", units, false);
        py::array xa = checked(x, "x", d, false);
        py::array_t<double> phi(units), f(mo), A({mo, p});
        RanEvalArgs a;
        a.units = units; a.d = d; a.m = mo;
        a.theta = static_cast<const double*>(th.data());
        a.widths = static_cast<const double*>(w.data());
        a.x = static_cast<const double*>(xa.data());
        a.phi = phi.mutable_data(); a.f = f.mutable_data(); a.A = A.mutable_data();
        cpu_kernels().ran.eval(a);
        return py::make_tuple(phi, f, A);
      },
      "theta"_a, "widths"_a, "units"_a, "d"_a, "m"_a, "x"_a, "(phi, f, A = df/dtheta) at one input x.");
  m.def(
      "ran_predict",
      [](py::object theta, py::object widths, int64_t units, int64_t d, int64_t mo, py::object X) {
        check_dims(units, d, mo);
        py::array th = checked(theta, "theta", ran_params(units, d, mo), false);
        py::array w = checked(widths, "widths", units, false);
        py::array Xa = checked(X, "X", 0, false);
        if (Xa.ndim() != 2 || Xa.shape(1) != d) throw ValueError("X: expected shape (n, " + std::to_string(d) + ")");
        const int64_t n = Xa.shape(0);
        py::array_t<double> Y({n, mo});
        RanPredictArgs a;
        a.units = units; a.d = d; a.m = mo; a.n = n;
        a.theta = static_cast<const double*>(th.data());
        a.widths = static_cast<const double*>(w.data());
        a.X = static_cast<const double*>(Xa.data());
        a.Y = Y.mutable_data();
        {
          py::gil_scoped_release nogil;
          cpu_kernels().ran.predict(a);
        }
        return Y;
      },
      "theta"_a, "widths"_a, "units"_a, "d"_a, "m"_a, "X"_a, "Y = f(X) for a batch X (n, d).");
}

}  // namespace fl
