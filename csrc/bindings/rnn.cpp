// Python bindings of the recurrent kernels: fusedlearn._C.rnn_forward /
// rnn_backward (one layer, one direction, a whole sequence) and rnn_cell (one
// fused cell phase).  Arrays come in a dict by name; every one is checked
// (dtype, device, exact shape, contiguity, writability, no written array
// overlapping another) before a kernel runs.  fusedlearn.functional.rnn
// allocates the outputs and workspaces.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <string>
#include <vector>

#include "bindings/array_interop.h"
#include "bindings/dlpack_abi.h"
#include "core/dispatch.h"
#include "core/errors.h"
#include "kernels/rnn_args.h"
#include "cuda/cuda_api.h"

namespace fl {
namespace py = pybind11;
using namespace pybind11::literals;

namespace {

std::string shape_str(const std::vector<int64_t>& s) {
  std::string r = "(";
  for (size_t i = 0; i < s.size(); ++i) r += (i ? ", " : "") + std::to_string(s[i]);
  return r + (s.size() == 1 ? ",)" : ")");
}

// The arrays of one call, borrowed and checked by name.
class ArgSet {
 public:
  explicit ArgSet(py::dict d) : d_(std::move(d)) {}

  // nullptr when absent/None and optional
  void* get(const char* name, const std::vector<int64_t>& shape, bool writable, bool required) {
    py::object obj = d_.contains(name) ? py::reinterpret_borrow<py::object>(d_[name]) : py::none();
    if (obj.is_none()) {
      if (required) throw ValueError(std::string(name) + ": required array is missing");
      return nullptr;
    }
    ArrayRef r = borrow_array(obj, ArgName{name}, writable);
    if (r.shape.empty() && r.owner) {
      for (auto v : py::tuple(obj.attr("shape"))) r.shape.push_back(v.cast<int64_t>());
    }
    if (r.shape != shape)
      throw ValueError(std::string(name) + ": expected shape " + shape_str(shape) + ", got " + shape_str(r.shape));
    if (!r.contiguous) throw ValueError(std::string(name) + ": must be C-contiguous");
    if (!arrays_.empty()) {
      const ArrayRef& f = arrays_.front();
      if (r.dtype != f.dtype)
        throw TypeError(std::string(name) + " is " + (r.dtype == DType::f32 ? "float32" : "float64") + " but " +
                        f.name() + " is " + (f.dtype == DType::f32 ? "float32" : "float64") +
                        ": all arrays must share one dtype");
      if (r.device_type != f.device_type || r.device_id != f.device_id)
        throw ValueError(std::string(name) + " is on " + r.device_str() + " but " + f.name() + " is on " +
                         f.device_str() + ": all arrays must be on one device");
    }
    written_.push_back(writable);
    arrays_.push_back(std::move(r));
    return arrays_.back().data;
  }
  // written arrays must not overlap any other array
  void check_overlaps() const {
    for (size_t i = 0; i < arrays_.size(); ++i) {
      if (!written_[i] || arrays_[i].numel == 0) continue;
      const auto b = uintptr_t(arrays_[i].data), e = b + arrays_[i].nbytes();
      for (size_t k = 0; k < arrays_.size(); ++k) {
        if (k == i || arrays_[k].numel == 0) continue;
        const auto b2 = uintptr_t(arrays_[k].data), e2 = b2 + arrays_[k].nbytes();
        if (b < e2 && b2 < e)
          throw ValueError(arrays_[i].name() + " shares memory with " + arrays_[k].name() + ": pass separate arrays");
      }
    }
  }
  DType dtype() const { return arrays_.front().dtype; }
  bool cuda() const {
    const auto& f = arrays_.front();
    if (f.device_type == dlpack::kCPU) return false;
    if (f.device_type == dlpack::kCUDA) return true;
    throw ValueError("arrays on an unsupported device (" + f.device_str() + "): fusedlearn supports CPU and CUDA");
  }
  int device() const { return arrays_.front().device_id; }

 private:
  py::dict d_;
  std::vector<ArrayRef> arrays_;
  std::vector<bool> written_;
};

RnnCell parse_cell(const std::string& s) {
  if (s == "lstm") return RnnCell::lstm;
  if (s == "gru") return RnnCell::gru;
  if (s == "gru_cho") return RnnCell::gru_cho;
  throw ValueError("cell: expected 'lstm', 'gru' or 'gru_cho', got '" + s + "'");
}

// lengths as int64 on the host; each in [1, T]
std::vector<int64_t> parse_lengths(const py::object& obj, int64_t B, int64_t T) {
  std::vector<int64_t> out;
  if (obj.is_none()) return out;
  py::array arr = py::array::ensure(obj);
  if (!arr || !(arr.dtype().kind() == 'i' || arr.dtype().kind() == 'u'))
    throw TypeError("lengths: expected an integer array, got " + std::string(py::str(py::type::of(obj).attr("__name__"))));
  auto li = py::array_t<int64_t, py::array::c_style | py::array::forcecast>::ensure(arr);
  if (li.ndim() != 1 || li.shape(0) != B)
    throw ValueError("lengths: expected shape (" + std::to_string(B) + ",), got " +
                     shape_str(std::vector<int64_t>(arr.shape(), arr.shape() + arr.ndim())));
  out.assign(li.data(), li.data() + B);
  for (int64_t b = 0; b < B; ++b)
    if (out[size_t(b)] < 1 || out[size_t(b)] > T)
      throw ValueError("lengths[" + std::to_string(b) + "] = " + std::to_string(out[size_t(b)]) +
                       ": every length must be in [1, T] with T = " + std::to_string(T));
  return out;
}

struct SeqCall {
  RnnCell cell;
  int64_t T, B, I, H, G;
  bool reverse;
  std::vector<int64_t> lengths;
  RnnSeqArgs<double> d;  // pointers as double*; cast to float* for float32 (same layout)
};

template <class T>
RnnSeqArgs<T> cast_args(const RnnSeqArgs<double>& s) {
  // every member is a pointer or a scalar: rebuild with the right pointer type
  RnnSeqArgs<T> a;
  a.cell = s.cell; a.T = s.T; a.B = s.B; a.I = s.I; a.H = s.H; a.reverse = s.reverse; a.lengths = s.lengths;
  auto c = [](const double* p) { return reinterpret_cast<const T*>(p); };
  auto m = [](double* p) { return reinterpret_cast<T*>(p); };
  a.x = c(s.x); a.w_ih = c(s.w_ih); a.w_hh = c(s.w_hh); a.b_ih = c(s.b_ih); a.b_hh = c(s.b_hh); a.peep = c(s.peep);
  a.h0 = c(s.h0); a.c0 = c(s.c0); a.y = m(s.y); a.ldy = s.ldy; a.h_n = m(s.h_n); a.c_n = m(s.c_n);
  a.gates = m(s.gates); a.hs = m(s.hs); a.aux = m(s.aux); a.work = m(s.work);
  a.dy = c(s.dy); a.lddy = s.lddy; a.dh_n = c(s.dh_n); a.dc_n = c(s.dc_n); a.dx = m(s.dx);
  a.dx_accumulate = s.dx_accumulate; a.dw_ih = m(s.dw_ih); a.dw_hh = m(s.dw_hh); a.db_ih = m(s.db_ih);
  a.db_hh = m(s.db_hh); a.dpeep = m(s.dpeep); a.dh0 = m(s.dh0); a.dc0 = m(s.dc0);
  return a;
}

// Borrow the arrays both passes share; sizes come from x and w_hh.
void common_args(ArgSet& as, py::dict d, SeqCall& sc, const std::string& cell, bool reverse, py::object lengths) {
  sc.cell = parse_cell(cell);
  sc.G = rnn_gate_count(sc.cell);
  sc.reverse = reverse;
  auto shape_of = [&](const char* name) {
    if (!d.contains(name) || d[name].is_none()) throw ValueError(std::string(name) + ": required array is missing");
    std::vector<int64_t> s;
    for (auto v : py::tuple(d[name].attr("shape"))) s.push_back(v.cast<int64_t>());
    return s;
  };
  const auto xs = shape_of("x"), ws = shape_of("w_hh");
  if (xs.size() != 3) throw ValueError("x: expected a 3-D array (T, B, input_size), got shape " + shape_str(xs));
  if (ws.size() != 2 || ws[0] % sc.G != 0 || ws[1] * sc.G != ws[0])
    throw ValueError("w_hh: expected shape (" + std::to_string(sc.G) + "*H, H), got " + shape_str(ws));
  sc.T = xs[0]; sc.B = xs[1]; sc.I = xs[2]; sc.H = ws[1];
  const int64_t T = sc.T, B = sc.B, I = sc.I, H = sc.H, GH = sc.G * H;
  sc.lengths = parse_lengths(lengths, B, T);
  RnnSeqArgs<double>& a = sc.d;
  a.cell = sc.cell; a.T = T; a.B = B; a.I = I; a.H = H; a.reverse = reverse;
  a.lengths = sc.lengths.empty() ? nullptr : sc.lengths.data();
  a.x = static_cast<double*>(as.get("x", {T, B, I}, false, true));
  a.w_ih = static_cast<double*>(as.get("w_ih", {GH, I}, false, true));
  a.w_hh = static_cast<double*>(as.get("w_hh", {GH, H}, false, true));
  a.b_ih = static_cast<double*>(as.get("b_ih", {GH}, false, false));
  a.b_hh = static_cast<double*>(as.get("b_hh", {GH}, false, false));
  if ((a.b_ih == nullptr) != (a.b_hh == nullptr)) throw ValueError("b_ih and b_hh: pass both or neither");
  a.peep = static_cast<double*>(as.get("peep", {3 * H}, false, false));
  if (a.peep && sc.cell != RnnCell::lstm) throw ValueError("peep: peephole weights exist only for the LSTM");
  a.gates = static_cast<double*>(as.get("gates", {T * B, GH}, true, true));
  a.hs = static_cast<double*>(as.get("hs", {(T + 1) * B, H}, true, true));
  a.aux = static_cast<double*>(as.get("aux", {(sc.cell == RnnCell::lstm ? T + 1 : T) * B, H}, true, true));
  a.work = static_cast<double*>(as.get("work", {B, GH}, true, true));
}

// y / dy: [T, B, Y] with this direction's H columns at `offset`
double* strided_out(ArgSet& as, py::dict d, const char* name, const SeqCall& sc, int64_t offset, bool writable,
                    bool required, int64_t& ld) {
  if (!d.contains(name) || d[name].is_none()) {
    if (required) throw ValueError(std::string(name) + ": required array is missing");
    return nullptr;
  }
  std::vector<int64_t> s;
  for (auto v : py::tuple(d[name].attr("shape"))) s.push_back(v.cast<int64_t>());
  if (s.size() != 3 || s[0] != sc.T || s[1] != sc.B)
    throw ValueError(std::string(name) + ": expected shape (" + std::to_string(sc.T) + ", " + std::to_string(sc.B) +
                     ", Y), got " + shape_str(s));
  if (offset < 0 || offset + sc.H > s[2])
    throw ValueError(std::string(name) + ": columns [" + std::to_string(offset) + ", " + std::to_string(offset + sc.H) +
                     ") do not fit its last dimension " + std::to_string(s[2]));
  ld = s[2];
  return static_cast<double*>(as.get(name, s, writable, true));
}

void run_seq(SeqCall& sc, ArgSet& as, bool backward) {
  as.check_overlaps();
  const bool f32 = as.dtype() == DType::f32;
  if (as.cuda()) {
    if (!f32) throw TypeError("rnn on CUDA: float32 only");
    auto a = cast_args<float>(sc.d);
    if (backward) cuda::rnn_backward_f32(a, as.device()); else cuda::rnn_forward_f32(a, as.device());
    return;
  }
  const CpuKernels& k = cpu_kernels();
  py::gil_scoped_release nogil;
  if (f32) {
    auto a = cast_args<float>(sc.d);
    backward ? k.rnn_backward_f32(a) : k.rnn_forward_f32(a);
  } else {
    backward ? k.rnn_backward_f64(sc.d) : k.rnn_forward_f64(sc.d);
  }
}

size_t esize(ArgSet& as) { return as.dtype() == DType::f32 ? 4 : 8; }

void rnn_forward_call(const std::string& cell, bool reverse, py::dict d, int64_t y_offset, py::object lengths) {
  ArgSet as(d);
  SeqCall sc;
  common_args(as, d, sc, cell, reverse, lengths);
  RnnSeqArgs<double>& a = sc.d;
  const int64_t B = sc.B, H = sc.H;
  const bool lstm = sc.cell == RnnCell::lstm;
  a.h0 = static_cast<double*>(as.get("h0", {B, H}, false, false));
  a.c0 = lstm ? static_cast<double*>(as.get("c0", {B, H}, false, false)) : nullptr;
  a.h_n = static_cast<double*>(as.get("h_n", {B, H}, true, true));
  a.c_n = lstm ? static_cast<double*>(as.get("c_n", {B, H}, true, true)) : nullptr;
  int64_t ld = 0;
  double* y = strided_out(as, d, "y", sc, y_offset, true, true, ld);
  a.y = reinterpret_cast<double*>(reinterpret_cast<char*>(y) + size_t(y_offset) * esize(as));
  a.ldy = ld;
  run_seq(sc, as, false);
}

void rnn_backward_call(const std::string& cell, bool reverse, py::dict d, int64_t dy_offset, py::object lengths,
                       bool dx_accumulate) {
  ArgSet as(d);
  SeqCall sc;
  common_args(as, d, sc, cell, reverse, lengths);
  RnnSeqArgs<double>& a = sc.d;
  const int64_t T = sc.T, B = sc.B, I = sc.I, H = sc.H, GH = sc.G * H;
  const bool lstm = sc.cell == RnnCell::lstm;
  int64_t ld = 0;
  double* dy = strided_out(as, d, "dy", sc, dy_offset, false, false, ld);
  a.dy = dy ? reinterpret_cast<double*>(reinterpret_cast<char*>(dy) + size_t(dy_offset) * esize(as)) : nullptr;
  a.lddy = ld;
  a.dh_n = static_cast<double*>(as.get("dh_n", {B, H}, false, false));
  a.dc_n = lstm ? static_cast<double*>(as.get("dc_n", {B, H}, false, false)) : nullptr;
  a.dx = static_cast<double*>(as.get("dx", {T, B, I}, true, true));
  a.dx_accumulate = dx_accumulate;
  a.dw_ih = static_cast<double*>(as.get("dw_ih", {GH, I}, true, true));
  a.dw_hh = static_cast<double*>(as.get("dw_hh", {GH, H}, true, true));
  a.db_ih = static_cast<double*>(as.get("db_ih", {GH}, true, a.b_ih != nullptr));
  a.db_hh = static_cast<double*>(as.get("db_hh", {GH}, true, a.b_hh != nullptr));
  a.dpeep = static_cast<double*>(as.get("dpeep", {3 * H}, true, a.peep != nullptr));
  a.dh0 = static_cast<double*>(as.get("dh0", {B, H}, true, true));
  a.dc0 = lstm ? static_cast<double*>(as.get("dc0", {B, H}, true, true)) : nullptr;
  run_seq(sc, as, true);
}

RnnPhase parse_phase(const std::string& s) {
  static const char* names[] = {"lstm_fwd", "lstm_bwd", "gru_fwd", "gru_bwd",
                                "cho_fwd1", "cho_fwd2", "cho_bwd1", "cho_bwd2"};
  for (int i = 0; i < 8; ++i)
    if (s == names[i]) return RnnPhase(i);
  throw ValueError("phase: unknown phase '" + s + "'");
}

// One fused cell phase on [B, *] arrays (see kernels/rnn_args.h for what each phase reads and writes).
void rnn_cell_call(const std::string& phase_name, py::dict d, int64_t B, int64_t H, int64_t t, py::object lengths) {
  const RnnPhase ph = parse_phase(phase_name);
  const bool lstm = ph == RnnPhase::lstm_fwd || ph == RnnPhase::lstm_bwd;
  const int64_t GH = (lstm ? 4 : 3) * H;
  if (B < 0 || H < 0) throw ValueError("B and H must be >= 0");
  std::vector<int64_t> lens;
  if (!lengths.is_none()) lens = parse_lengths(lengths, B, INT64_MAX);
  ArgSet as(d);
  RnnCellArgs<double> a;
  a.phase = ph; a.B = B; a.H = H; a.t = t; a.ldg = GH; a.ldgh = 3 * H; a.ldy = H; a.lddy = H;
  a.lengths = lens.empty() ? nullptr : lens.data();
  auto want = [&](std::initializer_list<RnnPhase> ps) {
    for (auto p : ps)
      if (p == ph) return true;
    return false;
  };
  using P = RnnPhase;
  const std::vector<int64_t> bh{B, H};
  a.gates = static_cast<double*>(as.get("gates", {B, GH}, true, true));
  a.gh = static_cast<double*>(as.get("gh", {B, 3 * H}, false, ph == P::gru_fwd));
  a.h_prev = static_cast<double*>(as.get("h_prev", bh, false, ph != P::lstm_bwd));
  a.c_prev = static_cast<double*>(as.get("c_prev", bh, false, lstm));
  a.c = static_cast<double*>(as.get("c", bh, ph == P::lstm_fwd, lstm));
  a.h = static_cast<double*>(as.get("h", bh, true, want({P::lstm_fwd, P::gru_fwd, P::cho_fwd2})));
  a.y = static_cast<double*>(as.get("y", bh, true, false));
  a.aux = static_cast<double*>(as.get("aux", bh, true, want({P::gru_fwd, P::gru_bwd, P::cho_fwd1, P::cho_bwd2})));
  a.peep = static_cast<double*>(as.get("peep", {3 * H}, false, false));
  a.dh = static_cast<double*>(as.get("dh", bh, true, want({P::lstm_bwd, P::gru_bwd, P::cho_bwd1, P::cho_bwd2})));
  a.dy = static_cast<double*>(as.get("dy", bh, false, false));
  a.dc = static_cast<double*>(as.get("dc", bh, true, ph == P::lstm_bwd));
  a.db_ih = static_cast<double*>(as.get("db_ih", {GH}, true, false));
  a.db_hh = static_cast<double*>(as.get("db_hh", {GH}, true, false));
  a.dpeep = static_cast<double*>(as.get("dpeep", {3 * H}, true, false));
  as.check_overlaps();
  if (as.cuda()) throw ValueError("rnn_cell: CPU arrays only (the CUDA cell runs inside rnn_forward / rnn_backward)");
  const CpuKernels& k = cpu_kernels();
  py::gil_scoped_release nogil;
  if (as.dtype() == DType::f32) {
    RnnCellArgs<float> f;
    auto c = [](const double* p) { return reinterpret_cast<const float*>(p); };
    auto m = [](double* p) { return reinterpret_cast<float*>(p); };
    f.phase = a.phase; f.B = a.B; f.H = a.H; f.t = a.t; f.ldg = a.ldg; f.ldgh = a.ldgh; f.ldy = a.ldy;
    f.lddy = a.lddy; f.lengths = a.lengths;
    f.gates = m(a.gates); f.gh = c(a.gh); f.h_prev = c(a.h_prev); f.c_prev = c(a.c_prev); f.h = m(a.h);
    f.c = m(a.c); f.y = m(a.y); f.aux = m(a.aux); f.peep = c(a.peep); f.dh = m(a.dh); f.dy = c(a.dy);
    f.dc = m(a.dc); f.db_ih = m(a.db_ih); f.db_hh = m(a.db_hh); f.dpeep = m(a.dpeep);
    k.rnn_cell_f32(f);
  } else {
    k.rnn_cell_f64(a);
  }
}

}  // namespace

void bind_rnn(py::module_& m) {
  m.def("rnn_forward", &rnn_forward_call, "cell"_a, "reverse"_a, "arrays"_a, "y_offset"_a = 0,
        "lengths"_a = py::none(),
        "One recurrent layer in one direction over a whole sequence (see fusedlearn.functional.rnn).");
  m.def("rnn_backward", &rnn_backward_call, "cell"_a, "reverse"_a, "arrays"_a, "dy_offset"_a = 0,
        "lengths"_a = py::none(), "dx_accumulate"_a = false,
        "Backward of rnn_forward: consumes its workspaces, accumulates the weight gradients.");
  m.def("rnn_cell", &rnn_cell_call, "phase"_a, "arrays"_a, "B"_a, "H"_a, "t"_a = 0, "lengths"_a = py::none(),
        "One fused cell phase (after the matrix products) over B rows.");
}

}  // namespace fl
