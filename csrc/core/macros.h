// Common macros shared by host, ISA-specific and CUDA translation units.
#pragma once

#if defined(__CUDACC__)
#define FL_HD __host__ __device__ __forceinline__
#else
#define FL_HD inline __attribute__((always_inline))
#endif

// Every kernel translation unit is compiled once per instruction set with
// FL_ISA_NS set to a distinct namespace (isa_scalar, isa_avx2, isa_avx512,
// isa_cuda).  All code that is compiled with ISA-specific flags must live in
// that namespace so the linker can never merge an AVX-512 body into the
// scalar build of the same inline function (an ODR trap).
#ifndef FL_ISA_NS
#define FL_ISA_NS isa_host
#endif
