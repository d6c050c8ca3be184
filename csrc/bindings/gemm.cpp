// Python binding of the GEMM with fused epilogue: fusedlearn._C.gemm.
//   out = act(alpha * op(a) @ op(b) + beta * c + bias),  preact = the argument of act
// Argument checking lives here; fusedlearn.functional.gemm allocates `out`.
#include <pybind11/pybind11.h>

#include <cstring>
#include <string>

#include "bindings/array_interop.h"
#include "bindings/dlpack_abi.h"
#include "core/dispatch.h"
#include "core/errors.h"
#include "kernels/gemm_args.h"
#include "cuda/cuda_api.h"

namespace fl {
namespace py = pybind11;
using namespace pybind11::literals;

namespace {

std::string shape2(int64_t r, int64_t c) { return "(" + std::to_string(r) + ", " + std::to_string(c) + ")"; }
std::string shape_of(const MatrixRef& m) { return shape2(m.rows, m.cols); }
const char* dtype_name(DType d) { return d == DType::f32 ? "float32" : "float64"; }

Activation parse_activation(const py::object& act) {
  if (act.is_none()) return Activation::identity;
  if (!py::isinstance<py::str>(act))
    throw TypeError("activation: expected None or one of 'identity', 'relu', 'tanh', 'sigmoid', got " +
                    std::string(py::str(py::type::of(act).attr("__name__"))));
  const std::string s = act.cast<std::string>();
  if (s == "identity" || s == "linear" || s == "none") return Activation::identity;
  if (s == "relu") return Activation::relu;
  if (s == "tanh") return Activation::tanh;
  if (s == "sigmoid") return Activation::sigmoid;
  throw ValueError("activation: unknown activation '" + s + "'; expected one of 'identity', 'relu', 'tanh', 'sigmoid'");
}

BiasAxis parse_bias_axis(const std::string& s) {
  if (s == "col" || s == "cols" || s == "column") return BiasAxis::per_col;
  if (s == "row" || s == "rows") return BiasAxis::per_row;
  throw ValueError("bias_axis: expected 'col' (bias[N] added to every row) or 'row' (bias[M] added to every column), got '" +
                   s + "'");
}

struct Span {
  uintptr_t b, e;
  const char* name;
};
Span span_of(const MatrixRef& m, const char* name) {
  const auto b = uintptr_t(m.ref.data);
  return {b, b + m.span_bytes(), name};
}
bool overlaps(const Span& x, const Span& y) { return x.b < y.e && y.b < x.e && x.e > x.b && y.e > y.b; }

void check_same(const ArrayRef& x, const ArrayRef& first) {
  if (x.dtype != first.dtype)
    throw TypeError(x.name() + " is " + dtype_name(x.dtype) + " but " + first.name() + " is " + dtype_name(first.dtype) +
                    ": all arrays must share one dtype");
  if (x.device_type != first.device_type || x.device_id != first.device_id)
    throw ValueError(x.name() + " is on " + x.device_str() + " but " + first.name() + " is on " + first.device_str() +
                     ": all arrays must be on one device");
}

template <class T>
GemmArgs<T> make_args(const MatrixRef& a, const MatrixRef& b, const MatrixRef& out, bool ta, bool tb, double alpha,
                      double beta, const ArrayRef* bias, BiasAxis axis, Activation act, const MatrixRef* pre,
                      int64_t M, int64_t N, int64_t K) {
  GemmArgs<T> g;
  g.M = M;
  g.N = N;
  g.K = K;
  g.trans_a = ta != a.transposed;
  g.trans_b = tb != b.transposed;
  g.alpha = T(alpha);
  g.beta = T(beta);
  g.A = static_cast<const T*>(a.ref.data);
  g.lda = a.ld;
  g.B = static_cast<const T*>(b.ref.data);
  g.ldb = b.ld;
  g.C = static_cast<T*>(out.ref.data);
  g.ldc = out.ld;
  if (bias) {
    g.bias = static_cast<const T*>(bias->data);
    g.bias_axis = axis;
  }
  g.act = act;
  if (pre) {
    g.preact = static_cast<T*>(pre->ref.data);
    g.ld_preact = pre->ld;
  }
  return g;
}

// out = act(alpha op(a) op(b) + beta c + bias); c (when given) must have out's
// shape; it is copied into out first unless it is out itself.
void gemm_call(py::object a_obj, py::object b_obj, py::object out_obj, py::object c_obj, bool trans_a, bool trans_b,
               double alpha, double beta, py::object bias_obj, const std::string& bias_axis, py::object activation,
               py::object preact_obj) {
  const Activation act = parse_activation(activation);
  const BiasAxis axis = parse_bias_axis(bias_axis);
  // a and b may be column-major views (x.T): they flip their transpose flag
  MatrixRef a = borrow_matrix(a_obj, ArgName{"a"}, false, true);
  MatrixRef b = borrow_matrix(b_obj, ArgName{"b"}, false, true);
  check_same(b.ref, a.ref);
  const int64_t M = trans_a ? a.cols : a.rows, K = trans_a ? a.rows : a.cols;
  const int64_t Kb = trans_b ? b.cols : b.rows, N = trans_b ? b.rows : b.cols;
  if (K != Kb)
    throw ValueError("gemm: inner dimensions differ: op(a) is " + shape2(M, K) + " (a has shape " + shape_of(a) +
                     (trans_a ? ", trans_a=True" : "") + ") but op(b) is " + shape2(Kb, N) + " (b has shape " +
                     shape_of(b) + (trans_b ? ", trans_b=True" : "") + ")");
  MatrixRef out = borrow_matrix(out_obj, ArgName{"out"}, true);
  check_same(out.ref, a.ref);
  if (out.rows != M || out.cols != N)
    throw ValueError("out: expected shape " + shape2(M, N) + " (op(a) " + shape2(M, K) + " @ op(b) " + shape2(K, N) +
                     "), got " + shape_of(out));
  const bool cuda = out.ref.device_type != dlpack::kCPU;
  if (cuda && out.ref.device_type != dlpack::kCUDA)
    throw ValueError("out: arrays on an unsupported device (" + out.ref.device_str() + ")");

  ArrayRef bias;
  const bool has_bias = !bias_obj.is_none();
  if (has_bias) {
    bias = borrow_array(bias_obj, ArgName{"bias"}, false);
    check_same(bias, a.ref);
    const int64_t want = axis == BiasAxis::per_col ? N : M;
    if (bias.shape.empty() && bias.owner) {
      for (auto d : py::tuple(bias_obj.attr("shape"))) bias.shape.push_back(d.cast<int64_t>());
    }
    if (bias.shape.size() != 1 || bias.numel != want)
      throw ValueError("bias: expected shape (" + std::to_string(want) + ",) for bias_axis='" +
                       (axis == BiasAxis::per_col ? "col" : "row") + "' and output " + shape2(M, N) + ", got " +
                       [&] {
                         std::string s = "(";
                         for (size_t i = 0; i < bias.shape.size(); ++i) s += (i ? ", " : "") + std::to_string(bias.shape[i]);
                         return s + (bias.shape.size() == 1 ? ",)" : ")");
                       }());
  }
  MatrixRef pre;
  const bool has_pre = !preact_obj.is_none();
  if (has_pre) {
    pre = borrow_matrix(preact_obj, ArgName{"preact_out"}, true);
    check_same(pre.ref, a.ref);
    if (pre.rows != M || pre.cols != N)
      throw ValueError("preact_out: expected shape " + shape2(M, N) + " (the output's), got " + shape_of(pre));
  }
  MatrixRef c;
  bool copy_c = false;
  if (!c_obj.is_none()) {
    c = borrow_matrix(c_obj, ArgName{"c"}, false);
    check_same(c.ref, a.ref);
    if (c.rows != M || c.cols != N)
      throw ValueError("c: expected shape " + shape2(M, N) + " (the output's), got " + shape_of(c));
    const bool same = c.ref.data == out.ref.data && (c.ld == out.ld || M <= 1);
    if (!same) {
      if (overlaps(span_of(c, "c"), span_of(out, "out")))
        throw ValueError("c shares memory with out but is not the same matrix: pass separate arrays or c=out");
      copy_c = beta != 0.0;
      if (cuda && copy_c) throw ValueError("c: on CUDA pass c=out (copy c into out first)");
    }
  } else if (beta != 0.0) {
    throw ValueError("beta=" + std::to_string(beta) + " needs c (the matrix it scales); pass c or beta=0");
  }

  // written arrays must not overlap anything they are computed from
  const Span so = span_of(out, "out");
  std::vector<Span> reads{span_of(a, "a"), span_of(b, "b")};
  if (has_bias) {
    const auto bb = uintptr_t(bias.data);
    reads.push_back({bb, bb + bias.nbytes(), "bias"});
  }
  if (has_pre) {
    const Span sp = span_of(pre, "preact_out");
    for (const auto& r : reads)
      if (overlaps(sp, r)) throw ValueError(std::string("preact_out shares memory with ") + r.name + ": pass separate arrays");
    if (overlaps(sp, so)) throw ValueError("preact_out shares memory with out: pass separate arrays");
  }
  for (const auto& r : reads)
    if (overlaps(so, r)) throw ValueError(std::string("out shares memory with ") + r.name + ": pass separate arrays");

  const bool f32 = a.ref.dtype == DType::f32;
  const size_t es = f32 ? 4 : 8;
  if (cuda) {
    if (f32) {
      auto g = make_args<float>(a, b, out, trans_a, trans_b, alpha, beta, has_bias ? &bias : nullptr, axis, act,
                                has_pre ? &pre : nullptr, M, N, K);
      cuda::gemm_f32(g, out.ref.device_id);
    } else {
      auto g = make_args<double>(a, b, out, trans_a, trans_b, alpha, beta, has_bias ? &bias : nullptr, axis, act,
                                 has_pre ? &pre : nullptr, M, N, K);
      cuda::gemm_f64(g, out.ref.device_id);
    }
    return;
  }
  const CpuKernels& k = cpu_kernels();
  py::gil_scoped_release nogil;
  if (copy_c) {
    for (int64_t i = 0; i < M; ++i)
      std::memcpy(static_cast<char*>(out.ref.data) + size_t(i * out.ld) * es,
                  static_cast<const char*>(c.ref.data) + size_t(i * c.ld) * es, size_t(N) * es);
  }
  if (f32) {
    k.sgemm(make_args<float>(a, b, out, trans_a, trans_b, alpha, beta, has_bias ? &bias : nullptr, axis, act,
                             has_pre ? &pre : nullptr, M, N, K));
  } else {
    k.dgemm(make_args<double>(a, b, out, trans_a, trans_b, alpha, beta, has_bias ? &bias : nullptr, axis, act,
                              has_pre ? &pre : nullptr, M, N, K));
  }
}

}  // namespace

void bind_gemm(py::module_& m) {
  m.def("gemm", &gemm_call, "a"_a, "b"_a, "out"_a, "c"_a = py::none(), "trans_a"_a = false,
        "trans_b"_a = false, "alpha"_a = 1.0, "beta"_a = 0.0, "bias"_a = py::none(), "bias_axis"_a = "col",
        "activation"_a = py::none(), "preact_out"_a = py::none(),
        "out = act(alpha * op(a) @ op(b) + beta * c + bias), written into `out` (M x N). Row-major 2-D "
        "arrays whose rows are contiguous (leading dimensions allowed). float32: packed BLIS-style kernel; "
        "float64: reference path. preact_out receives the argument of act. beta != 0 needs c; c may be out.");
}

}  // namespace fl
