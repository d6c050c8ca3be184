# C++ tests of the per-ISA CPU kernels (FUSEDLEARN_TESTS=ON; run with ctest).
# Each test program is compiled once per ISA build that exists, with the same
# definitions (FL_ISA_NS, FL_ISA_NAME) and options (-O3, the -m flags) as that
# build's kernel objects, read from the fl_cpu_<isa> target itself, so it
# tests the code the library runs at that ISA.  A program exits 77 (skipped)
# where the CPU lacks the ISA.  Included from CMakeLists.txt inside
# if(FUSEDLEARN_TESTS); each program joins the fl_tests target.
foreach(_fl_isa scalar avx2 avx512)
  if(NOT TARGET fl_cpu_${_fl_isa})
    continue()
  endif()
  get_target_property(_fl_defs fl_cpu_${_fl_isa} COMPILE_DEFINITIONS)
  get_target_property(_fl_opts fl_cpu_${_fl_isa} COMPILE_OPTIONS)

  # the SGEMM micro-kernel and tile epilogues against a float64 reference
  set(_fl_t fl_gemm_micro_test_${_fl_isa})
  add_executable(${_fl_t} ${CMAKE_CURRENT_SOURCE_DIR}/csrc/tests/gemm_micro_test.cpp)
  target_include_directories(${_fl_t} PRIVATE ${CMAKE_CURRENT_SOURCE_DIR}/csrc)
  target_compile_definitions(${_fl_t} PRIVATE ${_fl_defs})
  target_compile_options(${_fl_t} PRIVATE ${_fl_opts})
  if(OpenMP_CXX_FOUND)
    target_link_libraries(${_fl_t} PRIVATE OpenMP::OpenMP_CXX)
  endif()
  add_dependencies(fl_tests ${_fl_t})
  add_test(NAME gemm_micro_${_fl_isa} COMMAND ${_fl_t})
  set_tests_properties(gemm_micro_${_fl_isa} PROPERTIES SKIP_RETURN_CODE 77 LABELS "cpu;kernels")
endforeach()
