// Borrow any array that speaks the buffer protocol (numpy, array.array,
// memoryview) or DLPack (PyTorch, CuPy, JAX ...) without copying it, and
// check it against what a kernel needs.
#pragma once
#include <pybind11/pybind11.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "kernels/kernel_table.h"

namespace fl {
namespace py = pybind11;

// An argument's name, formatted only when a message needs it: "params[3]".
struct ArgName {
  const char* list = "array";
  int64_t index = -1;  // -1: not in a list
  std::string str() const { return index < 0 ? list : std::string(list) + "[" + std::to_string(index) + "]"; }
};

struct ArrayRef {
  void* data = nullptr;
  int64_t numel = 0;
  DType dtype = DType::f32;
  int device_type = 1;  // DLPack device type: 1 CPU, 2 CUDA
  int device_id = 0;
  bool readonly = false;
  bool contiguous = true;
  std::vector<int64_t> shape;
  std::vector<int64_t> strides;     // in elements; filled by borrow_matrix only
  ArgName arg;                      // for messages
  py::object owner;                 // the object itself, kept alive for the call
  std::shared_ptr<void> keepalive;  // releases a buffer view / DLPack capsule (needs the GIL)

  std::string name() const { return arg.str(); }

  size_t nbytes() const { return size_t(numel) * (dtype == DType::f32 ? 4 : 8); }
  std::string device_str() const;
};

// Borrow `obj`.  Raises TypeError for a non-array or a dtype other than
// float32/float64, ValueError for a non-contiguous array or, when
// `writable`, a read-only one.
ArrayRef borrow_array(py::handle obj, const ArgName& name, bool writable);

// A 2-D row-major matrix whose rows are contiguous but may lie further apart
// than their length (a sub-matrix such as numpy's a[:, 2:7] or a torch
// slice): element (i, j) is at data + i * ld + j, ld >= cols.
// With `transposed`, it is instead column-major (the transpose of such a
// matrix, e.g. numpy's w.T): element (i, j) is at data + j * ld + i, ld >= rows.
struct MatrixRef {
  ArrayRef ref;
  int64_t rows = 0, cols = 0, ld = 0;  // the logical shape
  bool transposed = false;
  // bytes the matrix spans from data
  size_t span_bytes() const;
};
// Borrow `obj` as such a matrix.  TypeError as borrow_array; ValueError when
// it is not 2-D, its rows are not contiguous (column stride != 1) -- unless
// `allow_transposed` and its columns are --, its row stride is negative or
// smaller than a row, or (`writable`) it is read-only.
MatrixRef borrow_matrix(py::handle obj, const ArgName& name, bool writable, bool allow_transposed = false);

// A validated set of same-length lists for one fused call.
struct ListSpec {
  const char* name;  // argument name, e.g. "exp_avgs"
  py::handle list;   // a sequence of arrays, or None when optional and absent
  bool writable;
};
struct BorrowedLists {
  std::vector<std::vector<ArrayRef>> arrays;  // [list][tensor]; empty for absent lists
  std::vector<int64_t> offsets;               // prefix sums of numel
  std::vector<std::vector<void*>> ptrs;       // [list][tensor]
  DType dtype = DType::f32;
  int device_type = 1, device_id = 0;
  int64_t count = 0;
  FlatList flat(int first_stream = 0) const;
};
// Borrows every list, then checks: equal lengths, equal element counts per
// tensor, one dtype, one device, and no written array overlapping any other.
BorrowedLists borrow_lists(const std::vector<ListSpec>& specs);

}  // namespace fl
