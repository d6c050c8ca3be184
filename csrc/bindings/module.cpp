// The extension module fusedlearn._C: build facts, ISA dispatch, threads,
// exception translation, and one bind_* per kernel family.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "core/dispatch.h"
#include "core/errors.h"
#include "cuda/cuda_api.h"

namespace py = pybind11;
using namespace pybind11::literals;

namespace fl {
void bind_optim(py::module_& m);
void bind_grad_utils(py::module_& m);
void bind_gemm(py::module_& m);
void bind_rnn(py::module_& m);
void bind_conv(py::module_& m);
void bind_ran(py::module_& m);
}  // namespace fl

PYBIND11_MODULE(_C, m) {
  m.doc() = "fusedlearn's compiled kernels";
  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const fl::TypeError& e) {
      PyErr_SetString(PyExc_TypeError, e.what());
    } catch (const fl::ValueError& e) {
      PyErr_SetString(PyExc_ValueError, e.what());
    }
  });

  m.def("available_isas", &fl::available_isas, "Instruction-set builds this CPU can run, lowest first.");
  m.def("selected_isa", []() { return std::string(fl::selected_isa()); }, "The build in use.");
  m.def("set_isa", &fl::set_isa, "name"_a, "Use another ISA build ('scalar', 'avx2', 'avx512').");
  m.def("matrix_features", []() {
    const auto& f = fl::matrix_features();
    py::dict d;
    d["avx512_bf16"] = f.avx512_bf16;
    d["amx_tile"] = f.amx_tile;
    d["amx_bf16"] = f.amx_bf16;
    d["os_tile_state"] = f.os_tile_state;
    d["tile_permission"] = f.tile_permission;
    return d;
  }, "The CPU's bf16 matrix features and this process's AMX tile permission.");
  m.def("get_num_threads", &fl::num_threads);
  m.def("set_num_threads", &fl::set_num_threads, "n"_a);
  m.def("openmp_enabled", &fl::openmp_enabled);
  m.def("cuda_built", &fl::cuda::built);
  m.def("cuda_device_count", &fl::cuda::device_count);
  m.def("cuda_runtime_version", &fl::cuda::runtime_version);
  m.attr("compiled_isas") = py::make_tuple("scalar"
#ifdef FL_BUILD_AVX2
                                           , "avx2"
#endif
#ifdef FL_BUILD_AVX512
                                           , "avx512"
#endif
  );

  fl::bind_optim(m);
  fl::bind_grad_utils(m);
  fl::bind_gemm(m);
  fl::bind_rnn(m);
  fl::bind_conv(m);
  fl::bind_ran(m);
}
