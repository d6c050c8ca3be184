# ctest targets: the host emulators of the CUDA kernels (csrc/cuda/tools/).
# Each one runs the real per-thread code of the kernels for every thread of
# every block on the CPU, checks it against a plain reference and exits
# nonzero on a mismatch.  No GPU is needed, but they include the .cu sources
# (kernels, __shared__, threadIdx, the runtime API), so they need nvcc: they
# are built when the CUDA language is enabled (FL_HAVE_CUDA).
# Included from CMakeLists.txt inside if(FUSEDLEARN_TESTS).
if(FL_HAVE_CUDA)
  function(fl_add_cuda_emulator name source)
    set_source_files_properties(${source} PROPERTIES LANGUAGE CUDA)
    add_executable(${name} ${source})
    target_include_directories(${name} PRIVATE ${CMAKE_CURRENT_SOURCE_DIR}/csrc)
    target_compile_options(${name} PRIVATE ${ARGN})
    # The device code is compiled but never run: one architecture is enough.
    set_target_properties(${name} PROPERTIES CUDA_ARCHITECTURES 90-real)
    add_dependencies(fl_tests ${name})
    add_test(NAME ${name} COMMAND ${name})
    set_tests_properties(${name} PROPERTIES LABELS cuda_emulation TIMEOUT 900)
  endfunction()

  set(_fl_emu_host_flags)
  if(CMAKE_SYSTEM_PROCESSOR MATCHES "x86_64|AMD64|amd64")
    # host fmaf() as one instruction, like the GPU's fma
    set(_fl_emu_host_flags -Xcompiler=-mfma)
  endif()
  fl_add_cuda_emulator(cuda_host_emulation csrc/cuda/tools/host_emulation.cpp)
  fl_add_cuda_emulator(cuda_gemm_host_emulation csrc/cuda/tools/gemm_host_emulation.cpp ${_fl_emu_host_flags})
else()
  message(STATUS "fusedlearn: CUDA host emulators not built (no CUDA compiler enabled)")
endif()
