// Python bindings of the fused list reductions and maps behind
// clip_grad_norm_, clip_grad_value_ and non-finite detection.
#include <pybind11/pybind11.h>

#include "bindings/run_on_device.h"
#include "core/dispatch.h"
#include "cuda/cuda_api.h"

namespace fl {
namespace py = pybind11;
using namespace pybind11::literals;

namespace {

BorrowedLists borrow_one(const py::object& arrays, bool writable) {
  if (arrays.is_none()) throw TypeError("arrays: expected a list of arrays, got None");
  return borrow_lists({{"arrays", arrays, writable}});
}

template <class CpuFn, class CudaFn>
double reduce(const py::object& arrays, CpuFn cpu, CudaFn gpu) {
  BorrowedLists bl = borrow_one(arrays, false);
  if (bl.count == 0) return 0.0;
  FlatList f = bl.flat();
  if (on_cuda(bl)) return gpu(bl.dtype, f, bl.device_id);
  ReduceKernel k = cpu(cpu_kernels())[int(bl.dtype)];
  py::gil_scoped_release nogil;
  return k(f);
}

}  // namespace

void bind_grad_utils(py::module_& m) {
  m.def(
      "sum_of_squares",
      [](py::object arrays) {
        return reduce(arrays, [](const CpuKernels& k) { return k.sumsq; }, cuda::sumsq);
      },
      "arrays"_a, "Sum of x*x over every element of every array, accumulated in float64, in one pass.");
  m.def(
      "abs_max",
      [](py::object arrays) {
        return reduce(arrays, [](const CpuKernels& k) { return k.absmax; }, cuda::absmax);
      },
      "arrays"_a, "max |x| over every element of every array (NaN if any element is NaN).");
  m.def(
      "has_nonfinite",
      [](py::object arrays) {
        return reduce(arrays, [](const CpuKernels& k) { return k.nonfinite; },
                      [](DType d, const FlatList& f, int dev) { return cuda::nonfinite(d, f, dev) ? 1.0 : 0.0; }) != 0.0;
      },
      "arrays"_a, "True when any element of any array is NaN or +-Inf.");
  m.def(
      "scale_",
      [](py::object arrays, double factor) {
        BorrowedLists bl = borrow_one(arrays, true);
        if (bl.count == 0) return;
        FlatList f = bl.flat();
        if (on_cuda(bl)) return cuda::scale(bl.dtype, f, factor, bl.device_id);
        MapKernel k = cpu_kernels().scale[int(bl.dtype)];
        py::gil_scoped_release nogil;
        k(f, factor, 0.0);
      },
      "arrays"_a, "factor"_a, "x *= factor for every array, in place.");
  m.def(
      "clamp_",
      [](py::object arrays, double lo, double hi) {
        if (!(lo <= hi)) throw ValueError("clamp_: need lo <= hi");
        BorrowedLists bl = borrow_one(arrays, true);
        if (bl.count == 0) return;
        FlatList f = bl.flat();
        if (on_cuda(bl)) return cuda::clamp(bl.dtype, f, lo, hi, bl.device_id);
        MapKernel k = cpu_kernels().clamp[int(bl.dtype)];
        py::gil_scoped_release nogil;
        k(f, lo, hi);
      },
      "arrays"_a, "lo"_a, "hi"_a, "x = min(max(x, lo), hi) for every array, in place (NaN stays NaN).");
}

}  // namespace fl
