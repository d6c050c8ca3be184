#include "bindings/array_interop.h"

#include <algorithm>
#include <cstring>

#include "bindings/dlpack_abi.h"
#include "core/errors.h"

namespace fl {
namespace {

std::string type_name(py::handle obj) { return py::str(py::type::of(obj).attr("__name__")); }

DType dtype_from_format(const char* fmt, Py_ssize_t itemsize, const ArgName& name, bool& ok) {
  ok = true;
  if (fmt) {
    // skip byte-order / size prefixes ("<f", "=d", "@f")
    while (*fmt == '<' || *fmt == '=' || *fmt == '@' || *fmt == '!') ++fmt;
    if (std::strcmp(fmt, "f") == 0 && itemsize == 4) return DType::f32;
    if (std::strcmp(fmt, "d") == 0 && itemsize == 8) return DType::f64;
  }
  ok = false;
  return DType::f32;
}

[[noreturn]] void bad_dtype(const ArgName& name, const std::string& got) {
  throw TypeError(name.str() + ": expected a float32 (or float64) array, got dtype " + got);
}

bool compact_strides(const std::vector<int64_t>& shape, const int64_t* strides, int64_t itemsize_units) {
  // strides counted in elements when itemsize_units == 1, in bytes otherwise
  int64_t expect = itemsize_units;
  for (int i = int(shape.size()) - 1; i >= 0; --i) {
    if (shape[i] != 1 && strides[i] != expect) return false;
    expect *= shape[i];
  }
  return true;
}

bool from_buffer(py::handle obj, const ArgName& name, bool writable, ArrayRef& out) {
  if (!PyObject_CheckBuffer(obj.ptr())) return false;
  auto* view = new Py_buffer;
  if (PyObject_GetBuffer(obj.ptr(), view, PyBUF_RECORDS_RO) != 0) {
    delete view;
    PyErr_Clear();
    return false;
  }
  out.keepalive = std::shared_ptr<void>(view, [](void* v) {
    PyBuffer_Release(static_cast<Py_buffer*>(v));
    delete static_cast<Py_buffer*>(v);
  });
  bool ok;
  out.dtype = dtype_from_format(view->format, view->itemsize, name, ok);
  if (!ok) {
    std::string got = view->format ? view->format : "?";
    if (py::hasattr(obj, "dtype")) got = py::str(obj.attr("dtype"));
    bad_dtype(name, got);
  }
  out.data = view->buf;
  out.readonly = view->readonly != 0;
  out.shape.assign(view->shape, view->shape + view->ndim);
  out.numel = 1;
  for (auto s : out.shape) out.numel *= s;
  out.contiguous = view->strides == nullptr || out.numel == 0 ||
                   compact_strides(out.shape, reinterpret_cast<int64_t*>(view->strides), view->itemsize);
  if (view->strides && !out.contiguous) {  // borrow_matrix reads them
    out.strides.resize(size_t(view->ndim));
    for (int i = 0; i < view->ndim; ++i) {
      // a byte stride that is not a whole number of elements cannot be used: mark it invalid
      out.strides[size_t(i)] = view->strides[i] % view->itemsize == 0 ? view->strides[i] / view->itemsize : INT64_MIN;
    }
  }
  static_assert(sizeof(Py_ssize_t) == sizeof(int64_t), "64-bit platforms only");
  out.device_type = dlpack::kCPU;
  return true;
}

template <class M>
void fill_from_dltensor(const dlpack::Tensor& t, const ArgName& name, ArrayRef& out) {
  if (t.dtype.code != dlpack::kFloat || t.dtype.lanes != 1 || (t.dtype.bits != 32 && t.dtype.bits != 64)) {
    static const char* codes[] = {"int", "uint", "float", "opaque", "bfloat", "complex", "bool"};
    std::string got = (t.dtype.code < 7 ? codes[t.dtype.code] : "code" + std::to_string(t.dtype.code)) +
                      std::to_string(t.dtype.bits);
    bad_dtype(name, got);
  }
  out.dtype = t.dtype.bits == 32 ? DType::f32 : DType::f64;
  out.data = static_cast<char*>(t.data) + t.byte_offset;
  out.shape.assign(t.shape, t.shape + t.ndim);
  out.numel = 1;
  for (auto s : out.shape) out.numel *= s;
  out.contiguous = t.strides == nullptr || out.numel == 0 || compact_strides(out.shape, t.strides, 1);
  if (t.strides && !out.contiguous) out.strides.assign(t.strides, t.strides + t.ndim);
  out.device_type = t.device.device_type;
  out.device_id = t.device.device_id;
  if (out.device_type == dlpack::kCUDAHost) out.device_type = dlpack::kCPU;
}

bool from_dlpack(py::handle obj, const ArgName& name, ArrayRef& out) {
  if (!py::hasattr(obj, "__dlpack__")) return false;
  py::object src = py::reinterpret_borrow<py::object>(obj);
  // torch refuses to export a tensor that requires grad; we only read/write its data.
  if (py::hasattr(src, "requires_grad") && py::hasattr(src, "detach") &&
      py::bool_(src.attr("requires_grad"))) {
    src = src.attr("detach")();
  }
  py::object cap;
  try {
    cap = src.attr("__dlpack__")(py::arg("max_version") = py::make_tuple(1, 0));
  } catch (py::error_already_set& e) {
    if (!e.matches(PyExc_TypeError)) throw;
    cap = src.attr("__dlpack__")();
  }
  if (!PyCapsule_CheckExact(cap.ptr())) throw TypeError(name.str() + ": __dlpack__ did not return a capsule");
  const char* cname = PyCapsule_GetName(cap.ptr());
  // We do not consume the capsule: it stays named "dltensor[_versioned]", so
  // its own destructor calls the producer's deleter once we drop it.
  if (cname && std::strcmp(cname, "dltensor_versioned") == 0) {
    auto* m = static_cast<dlpack::ManagedTensorVersioned*>(PyCapsule_GetPointer(cap.ptr(), cname));
    if (!m) throw py::error_already_set();
    if (m->version.major != 1) throw TypeError(name.str() + ": unsupported DLPack major version " + std::to_string(m->version.major));
    fill_from_dltensor<dlpack::ManagedTensorVersioned>(m->dl_tensor, name, out);
    out.readonly = (m->flags & dlpack::kFlagReadOnly) != 0;
  } else if (cname && std::strcmp(cname, "dltensor") == 0) {
    auto* m = static_cast<dlpack::ManagedTensor*>(PyCapsule_GetPointer(cap.ptr(), cname));
    if (!m) throw py::error_already_set();
    fill_from_dltensor<dlpack::ManagedTensor>(m->dl_tensor, name, out);
  } else {
    throw TypeError(name.str() + ": __dlpack__ returned a capsule that is not a DLPack tensor");
  }
  auto* keep = new py::object(std::move(cap));
  out.keepalive = std::shared_ptr<void>(keep, [](void* p) { delete static_cast<py::object*>(p); });
  return true;
}

// torch.Tensor, read through its own accessors: several times cheaper than
// its Python-level __dlpack__ (which matters for lists of hundreds of
// parameters).  Returns false for anything it does not fully understand
// (other layouts, devices), leaving it to the DLPack path.
struct TorchTypes {
  py::object tensor_type, float32, float64, strided;
  py::str layout{"layout"}, is_cuda{"is_cuda"}, is_cpu{"is_cpu"}, dtype{"dtype"}, numel{"numel"},
      is_contiguous{"is_contiguous"}, data_ptr{"data_ptr"}, get_device{"get_device"};
};
const TorchTypes* torch_types() {
  static TorchTypes* cached = nullptr;
  if (cached) return cached;
  PyObject* mod = PyImport_GetModule(py::str("torch").ptr());  // only if torch is already imported
  if (!mod) {
    PyErr_Clear();
    return nullptr;
  }
  py::object torch = py::reinterpret_steal<py::object>(mod);
  if (!py::hasattr(torch, "Tensor") || !py::hasattr(torch, "strided")) return nullptr;
  cached = new TorchTypes{torch.attr("Tensor"), torch.attr("float32"), torch.attr("float64"), torch.attr("strided")};
  return cached;
}

py::object get_attr(py::handle obj, const py::str& name) {
  PyObject* r = PyObject_GetAttr(obj.ptr(), name.ptr());
  if (!r) throw py::error_already_set();
  return py::reinterpret_steal<py::object>(r);
}
py::object call_method(py::handle obj, const py::str& name) {
  PyObject* r = PyObject_CallMethodNoArgs(obj.ptr(), name.ptr());
  if (!r) throw py::error_already_set();
  return py::reinterpret_steal<py::object>(r);
}

bool from_torch(py::handle obj, const ArgName& name, ArrayRef& out) {
  const TorchTypes* tt = torch_types();
  if (!tt || !PyObject_TypeCheck(obj.ptr(), reinterpret_cast<PyTypeObject*>(tt->tensor_type.ptr()))) return false;
  if (!get_attr(obj, tt->layout).is(tt->strided)) return false;
  const bool cuda = get_attr(obj, tt->is_cuda).ptr() == Py_True;
  if (!cuda && get_attr(obj, tt->is_cpu).ptr() != Py_True) return false;
  py::object dt = get_attr(obj, tt->dtype);
  if (dt.is(tt->float32)) {
    out.dtype = DType::f32;
  } else if (dt.is(tt->float64)) {
    out.dtype = DType::f64;
  } else {
    std::string got = py::str(dt);
    if (got.rfind("torch.", 0) == 0) got = got.substr(6);
    bad_dtype(name, got);
  }
  out.numel = PyLong_AsLongLong(call_method(obj, tt->numel).ptr());
  out.contiguous = out.numel == 0 || call_method(obj, tt->is_contiguous).ptr() == Py_True;
  out.data = reinterpret_cast<void*>(uintptr_t(PyLong_AsUnsignedLongLong(call_method(obj, tt->data_ptr).ptr())));
  if (PyErr_Occurred()) throw py::error_already_set();
  out.device_type = cuda ? dlpack::kCUDA : dlpack::kCPU;
  out.device_id = cuda ? int(PyLong_AsLong(call_method(obj, tt->get_device).ptr())) : 0;
  out.readonly = false;
  out.owner = py::reinterpret_borrow<py::object>(obj);
  return true;
}

}  // namespace

std::string ArrayRef::device_str() const {
  if (device_type == dlpack::kCPU) return "cpu";
  if (device_type == dlpack::kCUDA || device_type == dlpack::kCUDAManaged) return "cuda:" + std::to_string(device_id);
  return "device_type=" + std::to_string(device_type) + ":" + std::to_string(device_id);
}

namespace {
ArrayRef borrow_any(py::handle obj, const ArgName& name, bool writable, bool allow_strided) {
  ArrayRef a;
  a.arg = name;
  if (obj.is_none()) throw TypeError(name.str() + ": expected an array, got None");
  // numpy and friends: the buffer protocol tells read-only state and format.
  // torch, CuPy, JAX: DLPack.
  if (!from_buffer(obj, name, writable, a) && !from_torch(obj, name, a) && !from_dlpack(obj, name, a))
    throw TypeError(name.str() + ": expected an array supporting DLPack or the buffer protocol "
                           "(numpy.ndarray, torch.Tensor, cupy.ndarray), got " + type_name(obj));
  if (!a.contiguous && !allow_strided)
    throw ValueError(name.str() + ": array must be contiguous (got strides that skip memory); "
                            "pass a contiguous copy");
  if (writable && a.readonly) throw ValueError(name.str() + ": array is read-only but is updated in place");
  return a;
}

std::string shape_str(const std::vector<int64_t>& s) {
  std::string r = "(";
  for (size_t i = 0; i < s.size(); ++i) r += (i ? ", " : "") + std::to_string(s[i]);
  return r + (s.size() == 1 ? ",)" : ")");
}
}  // namespace

ArrayRef borrow_array(py::handle obj, const ArgName& name, bool writable) {
  return borrow_any(obj, name, writable, false);
}

size_t MatrixRef::span_bytes() const {
  if (rows == 0 || cols == 0) return 0;
  const int64_t r = transposed ? cols : rows, c = transposed ? rows : cols;  // as stored
  return size_t((r - 1) * ld + c) * (ref.dtype == DType::f32 ? 4 : 8);
}

MatrixRef borrow_matrix(py::handle obj, const ArgName& name, bool writable, bool allow_transposed) {
  MatrixRef m;
  m.ref = borrow_any(obj, name, writable, true);
  ArrayRef& a = m.ref;
  if (a.owner && a.shape.empty()) {
    // read through torch's accessors, which give neither shape nor strides
    for (auto d : py::tuple(obj.attr("shape"))) a.shape.push_back(d.cast<int64_t>());
    if (!a.contiguous)
      for (auto d : py::tuple(obj.attr("stride")())) a.strides.push_back(d.cast<int64_t>());
  }
  if (a.shape.size() != 2)
    throw ValueError(name.str() + ": expected a 2-D matrix, got shape " + shape_str(a.shape));
  m.rows = a.shape[0];
  m.cols = a.shape[1];
  int64_t s0 = m.cols, s1 = 1;
  if (!a.contiguous && a.strides.size() == 2) {
    s0 = a.strides[0];
    s1 = a.strides[1];
  }
  if (allow_transposed && m.cols > 1 && m.rows > 1 && s1 != 1 && s0 == 1 && s1 >= m.rows) {
    m.transposed = true;  // column-major: the transpose of a row-major matrix with ld = s1
    m.ld = s1;
    return m;
  }
  if (m.cols > 1 && m.rows > 0 && s1 != 1)
    throw ValueError(name.str() + ": rows must be contiguous (column stride 1), got strides " +
                     shape_str({s0, s1}) + " in elements; for a transposed view pass the original with trans_a / trans_b, else a copy");
  if (m.rows > 1 && m.cols > 0 && (s0 < m.cols || s0 == INT64_MIN))
    throw ValueError(name.str() + ": row stride " + std::to_string(s0) + " (elements) is negative or smaller than a row of " +
                     std::to_string(m.cols) + "; pass a copy");
  m.ld = (m.rows > 1 && m.cols > 0) ? s0 : std::max<int64_t>(m.cols, 1);
  return m;
}

FlatList BorrowedLists::flat(int first_stream) const {
  FlatList f;
  f.count = count;
  f.offsets = offsets.data();
  for (size_t i = 0; i < ptrs.size() && int(i) - first_stream < kMaxStreams; ++i) {
    if (int(i) < first_stream) continue;
    f.stream[i - first_stream] = arrays[i].empty() && count > 0 ? nullptr : const_cast<void* const*>(ptrs[i].data());
  }
  return f;
}

BorrowedLists borrow_lists(const std::vector<ListSpec>& specs) {
  BorrowedLists out;
  out.arrays.resize(specs.size());
  out.ptrs.resize(specs.size());
  int64_t n = -1;
  const char* first_name = nullptr;
  const ArrayRef* first = nullptr;
  for (size_t li = 0; li < specs.size(); ++li) {
    const auto& s = specs[li];
    if (s.list.is_none()) continue;
    if (!py::isinstance<py::sequence>(s.list) || py::isinstance<py::str>(s.list) ||
        PyObject_CheckBuffer(s.list.ptr()) || py::hasattr(s.list, "__dlpack__"))
      throw TypeError(std::string(s.name) + ": expected a list of arrays, got " + type_name(s.list));
    py::sequence seq = py::reinterpret_borrow<py::sequence>(s.list);
    const int64_t len = int64_t(py::len(seq));
    if (n < 0) {
      n = len;
      first_name = s.name;
    } else if (len != n) {
      throw ValueError(std::string(s.name) + " has " + std::to_string(len) + " arrays but " + first_name +
                       " has " + std::to_string(n));
    }
    auto& arrs = out.arrays[li];
    arrs.reserve(size_t(len));
    for (int64_t i = 0; i < len; ++i) {
      arrs.push_back(borrow_array(seq[size_t(i)], ArgName{s.name, i}, s.writable));
    }
  }
  out.count = n < 0 ? 0 : n;
  out.offsets.assign(size_t(out.count + 1), 0);
  // dtype / device / size agreement
  for (size_t li = 0; li < specs.size(); ++li) {
    for (const auto& a : out.arrays[li]) {
      if (!first) {
        first = &a;
        continue;
      }
      if (a.dtype != first->dtype)
        throw TypeError(a.name() + " is " + (a.dtype == DType::f32 ? "float32" : "float64") + " but " + first->name() +
                        " is " + (first->dtype == DType::f32 ? "float32" : "float64") + ": all arrays must share one dtype");
      if (a.device_type != first->device_type || a.device_id != first->device_id)
        throw ValueError(a.name() + " is on " + a.device_str() + " but " + first->name() + " is on " +
                         first->device_str() + ": all arrays must be on one device");
    }
  }
  if (first) {
    out.dtype = first->dtype;
    out.device_type = first->device_type;
    out.device_id = first->device_id;
  }
  for (int64_t i = 0; i < out.count; ++i) {
    const ArrayRef* ref = nullptr;
    for (size_t li = 0; li < specs.size(); ++li) {
      if (out.arrays[li].empty()) continue;
      const ArrayRef& a = out.arrays[li][size_t(i)];
      if (!ref) {
        ref = &a;
      } else if (a.numel != ref->numel) {
        throw ValueError(a.name() + " has " + std::to_string(a.numel) + " elements but " + ref->name() + " has " +
                         std::to_string(ref->numel));
      }
    }
    out.offsets[size_t(i + 1)] = out.offsets[size_t(i)] + (ref ? ref->numel : 0);
  }
  // aliasing: no written array may share memory with any other array
  struct Span { uintptr_t b, e; bool w; const ArrayRef* a; };
  std::vector<Span> spans;
  for (size_t li = 0; li < specs.size(); ++li)
    for (const auto& a : out.arrays[li])
      if (a.numel > 0) spans.push_back({uintptr_t(a.data), uintptr_t(a.data) + a.nbytes(), specs[li].writable, &a});
  std::sort(spans.begin(), spans.end(), [](const Span& x, const Span& y) { return x.b < y.b; });
  uintptr_t max_end_all = 0, max_end_w = 0;
  const ArrayRef *holder_all = nullptr, *holder_w = nullptr;
  for (const auto& s : spans) {
    if (s.b < max_end_w)
      throw ValueError(s.a->name() + " shares memory with " + holder_w->name() +
                       ", which is updated in place: pass separate arrays");
    if (s.w && s.b < max_end_all)
      throw ValueError(s.a->name() + " is updated in place but shares memory with " + holder_all->name() +
                       ": pass separate arrays");
    if (s.e > max_end_all) { max_end_all = s.e; holder_all = s.a; }
    if (s.w && s.e > max_end_w) { max_end_w = s.e; holder_w = s.a; }
  }
  for (size_t li = 0; li < specs.size(); ++li) {
    out.ptrs[li].reserve(out.arrays[li].size());
    for (const auto& a : out.arrays[li]) out.ptrs[li].push_back(a.data);
  }
  return out;
}

}  // namespace fl
