// Python bindings of the convolution, pooling and batch-norm kernels
// (fusedlearn._C.conv2d_forward, ...).  fusedlearn.functional.conv allocates
// the outputs; here every array is checked (dtype, device, contiguity, exact
// shape, read-only, overlap) before a kernel touches it, so a kernel can
// never read or write outside a buffer.  float32 and float64 on the CPU;
// float32 on CUDA (see cuda/conv).
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <string>
#include <vector>

#include "bindings/array_interop.h"
#include "bindings/dlpack_abi.h"
#include "core/dispatch.h"
#include "core/errors.h"
#include "kernels/conv_args.h"
#include "cuda/cuda_api.h"

namespace fl {
namespace py = pybind11;
using namespace pybind11::literals;

namespace {

using Shape = std::vector<int64_t>;

std::string shape_str(const Shape& s) {
  std::string r = "(";
  for (size_t i = 0; i < s.size(); ++i) r += (i ? ", " : "") + std::to_string(s[i]);
  return r + (s.size() == 1 ? ",)" : ")");
}
const char* dtype_name(DType d) { return d == DType::f32 ? "float32" : "float64"; }

// The arrays of one call: the first one fixes dtype and device; all are kept
// for the overlap check.
struct Call {
  std::vector<ArrayRef> arrays;
  std::vector<bool> written;
  const ArrayRef* first = nullptr;
  Call() {
    arrays.reserve(16);  // never reallocated: `first` and the returned pointers stay valid
    written.reserve(16);
  }

  // Borrow `obj` (None -> nullptr when optional) and check its shape (when `want` is not empty).
  const ArrayRef* get(py::handle obj, const char* name, bool writable, const Shape& want, bool optional = false) {
    if (obj.is_none()) {
      if (optional) return nullptr;
      throw TypeError(std::string(name) + ": expected an array, got None");
    }
    arrays.push_back(borrow_array(obj, ArgName{name}, writable));
    written.push_back(writable);
    ArrayRef& a = arrays.back();
    if (a.owner && a.shape.empty())
      for (auto d : py::tuple(obj.attr("shape"))) a.shape.push_back(d.cast<int64_t>());
    if (!first) {
      first = &arrays.front();
    } else {
      if (a.dtype != first->dtype)
        throw TypeError(a.name() + " is " + dtype_name(a.dtype) + " but " + first->name() + " is " +
                        dtype_name(first->dtype) + ": all arrays must share one dtype");
      if (a.device_type != first->device_type || a.device_id != first->device_id)
        throw ValueError(a.name() + " is on " + a.device_str() + " but " + first->name() + " is on " +
                         first->device_str() + ": all arrays must be on one device");
    }
    if (!want.empty() && a.shape != want)
      throw ValueError(a.name() + ": expected shape " + shape_str(want) + ", got " + shape_str(a.shape));
    return &a;
  }
  // Written arrays must not share memory with any other array of the call.
  void check_overlaps() const {
    for (size_t i = 0; i < arrays.size(); ++i) {
      if (!written[i]) continue;
      const auto bi = uintptr_t(arrays[i].data), ei = bi + arrays[i].nbytes();
      for (size_t j = 0; j < arrays.size(); ++j) {
        if (j == i) continue;
        const auto bj = uintptr_t(arrays[j].data), ej = bj + arrays[j].nbytes();
        if (bi < ej && bj < ei && ei > bi && ej > bj)
          throw ValueError(arrays[i].name() + " shares memory with " + arrays[j].name() + ": pass separate arrays");
      }
    }
  }
  bool cuda() const {
    if (first->device_type == dlpack::kCPU) return false;
    if (first->device_type != dlpack::kCUDA)
      throw ValueError(first->name() + ": arrays on an unsupported device (" + first->device_str() + ")");
    if (first->dtype != DType::f32)
      throw TypeError(first->name() + ": CUDA convolution, pooling and batch norm take float32 only");
    return true;
  }
  bool f32() const { return first->dtype == DType::f32; }
};

// The selected ISA's float32 or float64 kernel `pick(set)` on the arguments `run(T())`, without the GIL.
template <class Run, class Pick>
void run_cpu(const Call& c, Run&& run, Pick&& pick) {
  const CpuKernels& k = cpu_kernels();
  py::gil_scoped_release nogil;
  if (c.f32())
    pick(k.conv_f32)(run(float()));
  else
    pick(k.conv_f64)(run(double()));
}

template <class T>
const T* cptr(const ArrayRef* a) { return a ? static_cast<const T*>(a->data) : nullptr; }
template <class T>
T* mptr(const ArrayRef* a) { return a ? static_cast<T*>(a->data) : nullptr; }

Activation parse_act(const std::string& s, bool relu_only) {
  if (s == "identity" || s == "none" || s.empty()) return Activation::identity;
  if (s == "relu") return Activation::relu;
  if (!relu_only && s == "tanh") return Activation::tanh;
  if (!relu_only && s == "sigmoid") return Activation::sigmoid;
  throw ValueError("activation: unknown activation '" + s + "'; expected " +
                   (relu_only ? "None or 'relu'" : "None, 'relu', 'tanh' or 'sigmoid'"));
}

void need(bool ok, const std::string& msg) {
  if (!ok) throw ValueError(msg);
}

int64_t conv_out(int64_t in, int64_t k, int64_t stride, int64_t pad, int64_t dil) {
  const int64_t span = in + 2 * pad - dil * (k - 1) - 1;
  return span < 0 ? 0 : span / stride + 1;  // (C++ division truncates toward zero)
}

// x [N, C, H, W], w [K, C/groups, R, S] -> ConvShape (checked).
struct ShapeOnly {
  Shape shape;
};
template <class A>
ConvShape conv_shape(const A& x, const A& w, py::tuple stride, py::tuple padding, py::tuple dilation,
                     int64_t groups) {
  need(x.shape.size() == 4, "x: expected a 4-D input [N, C, H, W], got shape " + shape_str(x.shape));
  need(w.shape.size() == 4, "weight: expected a 4-D weight [out_channels, in_channels/groups, kH, kW], got shape " +
                                shape_str(w.shape));
  ConvShape s;
  s.N = x.shape[0];
  s.C = x.shape[1];
  s.H = x.shape[2];
  s.W = x.shape[3];
  s.K = w.shape[0];
  s.R = w.shape[2];
  s.S = w.shape[3];
  s.stride_h = stride[0].cast<int64_t>();
  s.stride_w = stride[1].cast<int64_t>();
  s.pad_h = padding[0].cast<int64_t>();
  s.pad_w = padding[1].cast<int64_t>();
  s.dil_h = dilation[0].cast<int64_t>();
  s.dil_w = dilation[1].cast<int64_t>();
  s.groups = groups;
  need(groups >= 1, "groups: must be >= 1, got " + std::to_string(groups));
  need(s.stride_h >= 1 && s.stride_w >= 1, "stride: must be >= 1");
  need(s.pad_h >= 0 && s.pad_w >= 0, "padding: must be >= 0");
  need(s.dil_h >= 1 && s.dil_w >= 1, "dilation: must be >= 1");
  need(s.C % groups == 0, "conv2d: in_channels (" + std::to_string(s.C) + ") must be divisible by groups (" +
                              std::to_string(groups) + ")");
  need(s.K % groups == 0, "conv2d: out_channels (" + std::to_string(s.K) + ") must be divisible by groups (" +
                              std::to_string(groups) + ")");
  need(w.shape[1] * groups == s.C, "conv2d: weight " + shape_str(w.shape) + " expects " +
                                       std::to_string(w.shape[1] * groups) + " input channels (groups=" +
                                       std::to_string(groups) + ") but x " + shape_str(x.shape) + " has " +
                                       std::to_string(s.C));
  need(s.R >= 1 && s.S >= 1, "weight: kernel size must be >= 1, got " + shape_str(w.shape));
  s.OH = conv_out(s.H, s.R, s.stride_h, s.pad_h, s.dil_h);
  s.OW = conv_out(s.W, s.S, s.stride_w, s.pad_w, s.dil_w);
  need(s.OH >= 1 && s.OW >= 1, "conv2d: the (padded) input " + shape_str(x.shape) +
                                   " is smaller than the (dilated) kernel " + shape_str({s.R, s.S}));
  return s;
}

// The path each pass of this convolution takes on the selected ISA (the same selection functions
// conv2d_forward / conv2d_backward run).
py::dict conv2d_paths(const Shape& input_shape, const Shape& weight_shape, py::tuple stride, py::tuple padding,
                      py::tuple dilation, int64_t groups, const std::string& dtype) {
  need(dtype == "float32" || dtype == "float64", "dtype: expected 'float32' or 'float64', got '" + dtype + "'");
  const ConvShape s = conv_shape(ShapeOnly{input_shape}, ShapeOnly{weight_shape}, stride, padding, dilation, groups);
  const CpuKernels& k = cpu_kernels();
  const ConvPathNames n = dtype == "float32" ? k.conv_f32.conv2d_paths(s) : k.conv_f64.conv2d_paths(s);
  py::dict d;
  d["forward"] = n.forward;
  d["input_grad"] = n.input_grad;
  d["weight_grad"] = n.weight_grad;
  return d;
}

// y = act(y) in place by the activation every CPU convolution path applies (kernels/fast_math.h
// through conv_common's act_inplace, selected ISA): the reference of the tests that check that
// each path rounds its activation alike.
void conv_activation_(py::object y_o, const std::string& activation) {
  Call c;
  const ArrayRef* y = c.get(y_o, "y", true, {});
  need(!c.cuda(), "y: expected a CPU array");
  const Activation act = parse_act(activation, false);
  int64_t n = 1;
  for (int64_t d : y->shape) n *= d;
  run_cpu(c, [&](auto tag) { return static_cast<decltype(tag)*>(y->data); },
          [&](const auto& set) {
            return [&, f = set.activation_](auto* p) { f(act, p, n); };
          });
}

void conv2d_forward(py::object x_o, py::object w_o, py::object b_o, py::object y_o, py::tuple stride,
                    py::tuple padding, py::tuple dilation, int64_t groups, const std::string& activation) {
  Call c;
  const ArrayRef* x = c.get(x_o, "x", false, {});
  const ArrayRef* w = c.get(w_o, "weight", false, {});
  const ConvShape s = conv_shape(*x, *w, stride, padding, dilation, groups);
  const ArrayRef* b = c.get(b_o, "bias", false, {s.K}, true);
  const ArrayRef* y = c.get(y_o, "out", true, {s.N, s.K, s.OH, s.OW});
  c.check_overlaps();
  const Activation act = parse_act(activation, false);
  const bool cuda = c.cuda();
  auto run = [&](auto tag) {
    using T = decltype(tag);
    ConvArgs<T> a;
    a.s = s;
    a.x = cptr<T>(x);
    a.w = cptr<T>(w);
    a.bias = cptr<T>(b);
    a.y = mptr<T>(y);
    a.act = act;
    return a;
  };
  if (cuda) {
    cuda::conv2d_forward_f32(run(float()), x->device_id);
    return;
  }
  run_cpu(c, run, [](const auto& set) { return set.conv2d_forward; });
}

void conv2d_backward(py::object x_o, py::object w_o, py::object dy_o, py::object y_o, py::object dx_o,
                     py::object dw_o, py::object db_o, py::tuple stride, py::tuple padding, py::tuple dilation,
                     int64_t groups, const std::string& activation, bool accumulate) {
  Call c;
  const ArrayRef* x = c.get(x_o, "x", false, {});
  const ArrayRef* w = c.get(w_o, "weight", false, {});
  const ConvShape s = conv_shape(*x, *w, stride, padding, dilation, groups);
  const Shape out_shape{s.N, s.K, s.OH, s.OW};
  const ArrayRef* dy = c.get(dy_o, "grad_output", false, out_shape);
  const Activation act = parse_act(activation, false);
  const ArrayRef* y = c.get(y_o, "output", false, out_shape, act == Activation::identity);
  const ArrayRef* dx = c.get(dx_o, "grad_input", true, x->shape, true);
  const ArrayRef* dw = c.get(dw_o, "grad_weight", true, w->shape, true);
  const ArrayRef* db = c.get(db_o, "grad_bias", true, {s.K}, true);
  c.check_overlaps();
  const bool cuda = c.cuda();
  auto run = [&](auto tag) {
    using T = decltype(tag);
    ConvArgs<T> a;
    a.s = s;
    a.x = cptr<T>(x);
    a.w = cptr<T>(w);
    a.dy = cptr<T>(dy);
    a.y = mptr<T>(const_cast<ArrayRef*>(y));
    a.act = act;
    a.dx = mptr<T>(dx);
    a.dw = mptr<T>(dw);
    a.db = mptr<T>(db);
    a.accumulate = accumulate;
    return a;
  };
  if (cuda) {
    cuda::conv2d_backward_f32(run(float()), x->device_id);
    return;
  }
  run_cpu(c, run, [](const auto& set) { return set.conv2d_backward; });
}

// ---- pooling ------------------------------------------------------------------------------
int64_t pool_out(int64_t in, int64_t k, int64_t stride, int64_t pad, int64_t dil, bool ceil_mode) {
  const int64_t span = in + 2 * pad - dil * (k - 1) - 1;
  if (span < 0) return 0;
  int64_t o = (ceil_mode ? (span + stride - 1) / stride : span / stride) + 1;
  // torch: the last window must start inside the image or its left padding
  if (ceil_mode && (o - 1) * stride >= in + pad) --o;
  return o;
}

PoolShape pool_shape(const ArrayRef& x, py::tuple kernel, py::tuple stride, py::tuple padding, py::tuple dilation,
                     bool ceil_mode, const char* who) {
  need(x.shape.size() == 4 || x.shape.size() == 3,
       std::string(who) + ": expected a 3-D [C, H, W] or 4-D [N, C, H, W] input, got shape " + shape_str(x.shape));
  PoolShape p;
  const size_t d = x.shape.size();
  p.H = x.shape[d - 2];
  p.W = x.shape[d - 1];
  p.planes = x.shape[0] * (d == 4 ? x.shape[1] : 1);
  p.kh = kernel[0].cast<int64_t>();
  p.kw = kernel[1].cast<int64_t>();
  p.stride_h = stride[0].cast<int64_t>();
  p.stride_w = stride[1].cast<int64_t>();
  p.pad_h = padding[0].cast<int64_t>();
  p.pad_w = padding[1].cast<int64_t>();
  p.dil_h = dilation[0].cast<int64_t>();
  p.dil_w = dilation[1].cast<int64_t>();
  need(p.kh >= 1 && p.kw >= 1, std::string(who) + ": kernel_size must be >= 1");
  need(p.stride_h >= 1 && p.stride_w >= 1, std::string(who) + ": stride must be >= 1");
  need(p.dil_h >= 1 && p.dil_w >= 1, std::string(who) + ": dilation must be >= 1");
  need(p.pad_h >= 0 && p.pad_w >= 0 && 2 * p.pad_h <= p.kh && 2 * p.pad_w <= p.kw,
       std::string(who) + ": padding must be >= 0 and at most half the kernel size, got padding (" +
           std::to_string(p.pad_h) + ", " + std::to_string(p.pad_w) + ") for kernel (" + std::to_string(p.kh) + ", " +
           std::to_string(p.kw) + ")");
  p.OH = pool_out(p.H, p.kh, p.stride_h, p.pad_h, p.dil_h, ceil_mode);
  p.OW = pool_out(p.W, p.kw, p.stride_w, p.pad_w, p.dil_w, ceil_mode);
  need(p.OH >= 1 && p.OW >= 1, std::string(who) + ": the output would be empty for input " + shape_str(x.shape) +
                                   " and kernel (" + std::to_string(p.kh) + ", " + std::to_string(p.kw) + ")");
  return p;
}

Shape pooled(const ArrayRef& x, const PoolShape& p) {
  Shape s = x.shape;
  s[s.size() - 2] = p.OH;
  s[s.size() - 1] = p.OW;
  return s;
}

// indices: a C-contiguous int64 numpy array (or any int64 buffer) of the output's shape.
int64_t* borrow_indices(py::handle obj, const Shape& want, bool writable) {
  if (obj.is_none()) return nullptr;
  if (!PyObject_CheckBuffer(obj.ptr()))
    throw TypeError("indices: expected an int64 array supporting the buffer protocol (numpy), got " +
                    std::string(py::str(py::type::of(obj).attr("__name__"))));
  py::buffer_info info = py::reinterpret_borrow<py::buffer>(obj).request(writable);
  if (info.itemsize != 8 || (info.format != "q" && info.format != "l" && info.format != "<q" && info.format != "<l"))
    throw TypeError("indices: expected dtype int64, got buffer format '" + info.format + "'");
  if (Shape(info.shape.begin(), info.shape.end()) != want)
    throw ValueError("indices: expected shape " + shape_str(want) + ", got " +
                     shape_str(Shape(info.shape.begin(), info.shape.end())));
  int64_t expect = 8;
  for (int i = int(info.ndim) - 1; i >= 0; --i) {
    if (info.shape[size_t(i)] != 1 && info.strides[size_t(i)] != expect)
      throw ValueError("indices: array must be contiguous");
    expect *= info.shape[size_t(i)];
  }
  if (writable && info.readonly) throw ValueError("indices: array is read-only but is written");
  return static_cast<int64_t*>(info.ptr);
}

void max_pool2d_forward(py::object x_o, py::object y_o, py::object idx_o, py::tuple kernel, py::tuple stride,
                        py::tuple padding, py::tuple dilation, bool ceil_mode) {
  Call c;
  const ArrayRef* x = c.get(x_o, "x", false, {});
  const PoolShape p = pool_shape(*x, kernel, stride, padding, dilation, ceil_mode, "max_pool2d");
  const ArrayRef* y = c.get(y_o, "out", true, pooled(*x, p));
  c.check_overlaps();
  const bool cuda = c.cuda();
  int64_t* idx = borrow_indices(idx_o, pooled(*x, p), true);
  if (!cuda && !idx) throw TypeError("indices: expected an int64 array, got None");
  auto run = [&](auto tag) {
    using T = decltype(tag);
    PoolArgs<T> a;
    a.s = p;
    a.x = cptr<T>(x);
    a.y = mptr<T>(y);
    a.indices = idx;
    return a;
  };
  if (cuda) {
    if (idx) throw ValueError("indices: on CUDA pass None (the backward pass recomputes the argmax from x)");
    cuda::max_pool2d_forward_f32(run(float()), x->device_id);
    return;
  }
  run_cpu(c, run, [](const auto& set) { return set.max_pool2d_forward; });
}

// CPU: from indices.  CUDA: indices None, x given (the argmax is recomputed).
void max_pool2d_backward(py::object dy_o, py::object idx_o, py::object dx_o, py::object x_o, py::tuple kernel,
                         py::tuple stride, py::tuple padding, py::tuple dilation, bool ceil_mode) {
  Call c;
  const ArrayRef* dx = c.get(dx_o, "grad_input", true, {});
  const PoolShape p = pool_shape(*dx, kernel, stride, padding, dilation, ceil_mode, "max_pool2d_backward");
  const ArrayRef* dy = c.get(dy_o, "grad_output", false, pooled(*dx, p));
  const ArrayRef* x = c.get(x_o, "x", false, dx->shape, true);
  c.check_overlaps();
  const bool cuda = c.cuda();
  int64_t* idx = borrow_indices(idx_o, pooled(*dx, p), false);
  auto run = [&](auto tag) {
    using T = decltype(tag);
    PoolArgs<T> a;
    a.s = p;
    a.x = cptr<T>(x);
    a.dy = cptr<T>(dy);
    a.dx = mptr<T>(dx);
    a.indices = idx;
    return a;
  };
  if (cuda) {
    if (!x) throw TypeError("x: on CUDA max_pool2d_backward needs the forward input x");
    cuda::max_pool2d_backward_f32(run(float()), dx->device_id);
    return;
  }
  if (!idx) throw TypeError("indices: expected an int64 array, got None");
  run_cpu(c, run, [](const auto& set) { return set.max_pool2d_backward; });
}

PoolShape avg_shape(const ArrayRef& x, py::tuple kernel, py::tuple stride, py::tuple padding, bool ceil_mode,
                    bool count_include_pad, int64_t divisor_override, const char* who) {
  PoolShape p = pool_shape(x, kernel, stride, padding, py::make_tuple(1, 1), ceil_mode, who);
  p.count_include_pad = count_include_pad;
  need(divisor_override >= 0, std::string(who) + ": divisor_override must be positive");
  p.divisor_override = divisor_override;
  return p;
}

void avg_pool2d_forward(py::object x_o, py::object y_o, py::tuple kernel, py::tuple stride, py::tuple padding,
                        bool ceil_mode, bool count_include_pad, int64_t divisor_override) {
  Call c;
  const ArrayRef* x = c.get(x_o, "x", false, {});
  const PoolShape p = avg_shape(*x, kernel, stride, padding, ceil_mode, count_include_pad, divisor_override, "avg_pool2d");
  const ArrayRef* y = c.get(y_o, "out", true, pooled(*x, p));
  c.check_overlaps();
  auto run = [&](auto tag) {
    using T = decltype(tag);
    PoolArgs<T> a;
    a.s = p;
    a.x = cptr<T>(x);
    a.y = mptr<T>(y);
    return a;
  };
  if (c.cuda()) {
    cuda::avg_pool2d_forward_f32(run(float()), x->device_id);
    return;
  }
  run_cpu(c, run, [](const auto& set) { return set.avg_pool2d_forward; });
}

void avg_pool2d_backward(py::object dy_o, py::object dx_o, py::tuple kernel, py::tuple stride, py::tuple padding,
                         bool ceil_mode, bool count_include_pad, int64_t divisor_override) {
  Call c;
  const ArrayRef* dx = c.get(dx_o, "grad_input", true, {});
  const PoolShape p =
      avg_shape(*dx, kernel, stride, padding, ceil_mode, count_include_pad, divisor_override, "avg_pool2d_backward");
  const ArrayRef* dy = c.get(dy_o, "grad_output", false, pooled(*dx, p));
  c.check_overlaps();
  auto run = [&](auto tag) {
    using T = decltype(tag);
    PoolArgs<T> a;
    a.s = p;
    a.dy = cptr<T>(dy);
    a.dx = mptr<T>(dx);
    return a;
  };
  if (c.cuda()) {
    cuda::avg_pool2d_backward_f32(run(float()), dx->device_id);
    return;
  }
  run_cpu(c, run, [](const auto& set) { return set.avg_pool2d_backward; });
}

// ---- batch norm ---------------------------------------------------------------------------
struct BnDims {
  int64_t N, C, HW;
};
BnDims bn_dims(const ArrayRef& x) {
  need(x.shape.size() >= 2, "batch_norm: expected an input [N, C, ...] with at least 2 dimensions, got shape " +
                                shape_str(x.shape));
  BnDims d{x.shape[0], x.shape[1], 1};
  for (size_t i = 2; i < x.shape.size(); ++i) d.HW *= x.shape[i];
  return d;
}

void batch_norm_forward(py::object x_o, py::object y_o, py::object w_o, py::object b_o, py::object rm_o,
                        py::object rv_o, py::object sm_o, py::object si_o, bool training, double momentum, double eps,
                        const std::string& activation) {
  Call c;
  const ArrayRef* x = c.get(x_o, "x", false, {});
  const BnDims d = bn_dims(*x);
  const ArrayRef* y = c.get(y_o, "out", true, x->shape);
  const ArrayRef* w = c.get(w_o, "weight", false, {d.C}, true);
  const ArrayRef* b = c.get(b_o, "bias", false, {d.C}, true);
  const ArrayRef* rm = c.get(rm_o, "running_mean", true, {d.C}, true);
  const ArrayRef* rv = c.get(rv_o, "running_var", true, {d.C}, true);
  const ArrayRef* sm = c.get(sm_o, "save_mean", true, {d.C}, true);
  const ArrayRef* si = c.get(si_o, "save_invstd", true, {d.C}, true);
  c.check_overlaps();
  need(!(rm == nullptr) == !(rv == nullptr), "batch_norm: pass both running_mean and running_var, or neither");
  if (training) {
    need(sm && si, "batch_norm: training needs save_mean and save_invstd (written for the backward pass)");
    need(d.N * d.HW > 1 || d.C == 0, "batch_norm: expected more than 1 value per channel when training, got input of shape " +
                                         shape_str(x->shape));
  } else {
    need(rm && rv, "batch_norm: evaluation (training=False) needs running_mean and running_var");
  }
  need(eps >= 0, "batch_norm: eps must be >= 0");
  const Activation act = parse_act(activation, true);
  auto run = [&](auto tag) {
    using T = decltype(tag);
    BatchNormArgs<T> a;
    a.N = d.N;
    a.C = d.C;
    a.HW = d.HW;
    a.x = cptr<T>(x);
    a.y = mptr<T>(y);
    a.weight = cptr<T>(w);
    a.bias = cptr<T>(b);
    a.running_mean = mptr<T>(rm);
    a.running_var = mptr<T>(rv);
    a.save_mean = mptr<T>(sm);
    a.save_invstd = mptr<T>(si);
    a.momentum = momentum;
    a.eps = eps;
    a.training = training;
    a.act = act;
    return a;
  };
  if (c.cuda()) {
    cuda::batch_norm_forward_f32(run(float()), x->device_id);
    return;
  }
  run_cpu(c, run, [](const auto& set) { return set.batch_norm_forward; });
}

void batch_norm_backward(py::object x_o, py::object y_o, py::object dy_o, py::object w_o, py::object rm_o,
                         py::object rv_o, py::object sm_o, py::object si_o, py::object dx_o, py::object dw_o,
                         py::object db_o, bool training, double eps, const std::string& activation, bool accumulate) {
  Call c;
  const ArrayRef* x = c.get(x_o, "x", false, {});
  const BnDims d = bn_dims(*x);
  const Activation act = parse_act(activation, true);
  const ArrayRef* y = c.get(y_o, "output", false, x->shape, act == Activation::identity);
  const ArrayRef* dy = c.get(dy_o, "grad_output", false, x->shape);
  const ArrayRef* w = c.get(w_o, "weight", false, {d.C}, true);
  const ArrayRef* rm = c.get(rm_o, "running_mean", false, {d.C}, true);
  const ArrayRef* rv = c.get(rv_o, "running_var", false, {d.C}, true);
  const ArrayRef* sm = c.get(sm_o, "save_mean", false, {d.C}, true);
  const ArrayRef* si = c.get(si_o, "save_invstd", false, {d.C}, true);
  const ArrayRef* dx = c.get(dx_o, "grad_input", true, x->shape, true);
  const ArrayRef* dw = c.get(dw_o, "grad_weight", true, {d.C}, true);
  const ArrayRef* db = c.get(db_o, "grad_bias", true, {d.C}, true);
  c.check_overlaps();
  if (training)
    need(sm && si, "batch_norm_backward: training needs save_mean and save_invstd from the forward pass");
  else
    need(rm && rv, "batch_norm_backward: evaluation (training=False) needs running_mean and running_var");
  auto run = [&](auto tag) {
    using T = decltype(tag);
    BatchNormArgs<T> a;
    a.N = d.N;
    a.C = d.C;
    a.HW = d.HW;
    a.x = cptr<T>(x);
    a.y = mptr<T>(const_cast<ArrayRef*>(y));
    a.dy = cptr<T>(dy);
    a.weight = cptr<T>(w);
    a.running_mean = mptr<T>(const_cast<ArrayRef*>(rm));
    a.running_var = mptr<T>(const_cast<ArrayRef*>(rv));
    a.save_mean = mptr<T>(const_cast<ArrayRef*>(sm));
    a.save_invstd = mptr<T>(const_cast<ArrayRef*>(si));
    a.dx = mptr<T>(dx);
    a.dweight = mptr<T>(dw);
    a.dbias = mptr<T>(db);
    a.eps = eps;
    a.training = training;
    a.act = act;
    a.accumulate = accumulate;
    return a;
  };
  if (c.cuda()) {
    cuda::batch_norm_backward_f32(run(float()), x->device_id);
    return;
  }
  run_cpu(c, run, [](const auto& set) { return set.batch_norm_backward; });
}

}  // namespace

void bind_conv(py::module_& m) {
  m.def("conv2d_forward", &conv2d_forward, "x"_a, "weight"_a, "bias"_a, "out"_a, "stride"_a, "padding"_a,
        "dilation"_a, "groups"_a, "activation"_a,
        "out = act(conv2d(x, weight) + bias), NCHW as torch; out must have the output's shape.");
  m.def("conv2d_paths", &conv2d_paths, "input_shape"_a, "weight_shape"_a, "stride"_a, "padding"_a, "dilation"_a,
        "groups"_a, "dtype"_a,
        "{'forward', 'input_grad', 'weight_grad'} -> the CPU algorithm family each pass takes for these shapes "
        "on the selected ISA.");
  m.def("conv_activation_", &conv_activation_, "y"_a, "activation"_a,
        "y = act(y) in place, by the fast-math activation of the CPU convolution paths (for tests).");
  m.def("conv2d_backward", &conv2d_backward, "x"_a, "weight"_a, "grad_output"_a, "output"_a, "grad_input"_a,
        "grad_weight"_a, "grad_bias"_a, "stride"_a, "padding"_a, "dilation"_a, "groups"_a, "activation"_a,
        "accumulate"_a,
        "Gradients of conv2d (through act, using output): grad_input overwritten; grad_weight / grad_bias "
        "overwritten or, with accumulate, added to. Any of the three may be None.");
  m.def("max_pool2d_forward", &max_pool2d_forward, "x"_a, "out"_a, "indices"_a, "kernel_size"_a, "stride"_a,
        "padding"_a, "dilation"_a, "ceil_mode"_a);
  m.def("max_pool2d_backward", &max_pool2d_backward, "grad_output"_a, "indices"_a, "grad_input"_a, "x"_a,
        "kernel_size"_a, "stride"_a, "padding"_a, "dilation"_a, "ceil_mode"_a);
  m.def("avg_pool2d_forward", &avg_pool2d_forward, "x"_a, "out"_a, "kernel_size"_a, "stride"_a, "padding"_a,
        "ceil_mode"_a, "count_include_pad"_a, "divisor_override"_a);
  m.def("avg_pool2d_backward", &avg_pool2d_backward, "grad_output"_a, "grad_input"_a, "kernel_size"_a, "stride"_a,
        "padding"_a, "ceil_mode"_a, "count_include_pad"_a, "divisor_override"_a);
  m.def("batch_norm_forward", &batch_norm_forward, "x"_a, "out"_a, "weight"_a, "bias"_a, "running_mean"_a,
        "running_var"_a, "save_mean"_a, "save_invstd"_a, "training"_a, "momentum"_a, "eps"_a, "activation"_a);
  m.def("batch_norm_backward", &batch_norm_backward, "x"_a, "output"_a, "grad_output"_a, "weight"_a,
        "running_mean"_a, "running_var"_a, "save_mean"_a, "save_invstd"_a, "grad_input"_a, "grad_weight"_a,
        "grad_bias"_a, "training"_a, "eps"_a, "activation"_a, "accumulate"_a);
}

}  // namespace fl
