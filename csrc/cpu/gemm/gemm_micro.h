// The SGEMM micro-kernel of the ISA being compiled, as `MicroKernel`.
// Included by cpu/gemm/gemm_kernels.cpp (compiled once per ISA) and the C++
// micro-kernel test (csrc/tests/gemm_micro_test.cpp): the translation unit's
// flags pick exactly one kernel, each in its own file named by its shape:
//   micro_avx512_12x32.h   AVX-512F
//   micro_avx2_6x16.h      AVX2 + FMA
//   micro_scalar_4x8.h     everything else
// They share the tile store (micro_tile.h); the cache blocking around them is
// in cpu/tuning.h (tuning::Gemm).
//
// Contract of MicroKernel::run_rows<R>(kc, A, B, C, ldc, alpha, beta, ep), 1 <= R <= MR
// (run_m(rows, ...) picks R at run time):
//   A: packed micro-panel of MR rows,    A[k * MR + i] = op(A)(i, k)
//   B: packed micro-panel of NR columns, B[k * NR + j] = op(B)(k, j)
//   C(i, j) = alpha * sum_k A(i, k) B(k, j) + beta * C(i, j)   for i < R, j < NR;
//   beta == 0: C is not read (it may hold NaN);
//   ep (TileEpilogue): then + bias[j], then max(., 0) when relu.
// Both panels are 64-byte aligned (the packing buffers are), so aligned loads
// are used on B; C may be anywhere (unaligned loads/stores).
#pragma once

#if defined(__AVX512F__)
#include "cpu/gemm/micro_avx512_12x32.h"
#elif defined(__AVX2__) && defined(__FMA__)
#include "cpu/gemm/micro_avx2_6x16.h"
#else
#include "cpu/gemm/micro_scalar_4x8.h"
#endif

namespace fl {
namespace FL_ISA_NS {

#if defined(__AVX512F__)
using MicroKernel = MicroAvx512_12x32;
#elif defined(__AVX2__) && defined(__FMA__)
using MicroKernel = MicroAvx2_6x16;
#else
using MicroKernel = MicroScalar_4x8;
#endif

}  // namespace FL_ISA_NS
}  // namespace fl
