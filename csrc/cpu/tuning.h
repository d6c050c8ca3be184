// The tuned constants of the CPU kernels, one table per instruction set.
// Included by translation units compiled once per ISA; the table for the
// ISA being compiled is selected by the compiler's target macros.  Each
// constant keeps a one-line reason and points at the bench/RESULTS.md
// section that measured it; timing histories live there, not here.
#pragma once
#include <cstdint>

#include "core/macros.h"

namespace fl {
namespace FL_ISA_NS {
namespace tuning {

// ==== GEMM (csrc/cpu/gemm) ==========================================================
// The BLIS-style SGEMM (cpu/gemm/gemm_kernels.cpp) around this ISA's micro-kernel
// (cpu/gemm/gemm_micro.h; its MR x NR is the kernel's shape, not a tuning knob).
// MC / KC / NC / GROUP_KIB can be overridden at run time with FUSEDLEARN_GEMM_MC, _KC,
// _NC, _GROUP_KIB (read once), for tuning on other machines.
//   MC         rows of a packed A block (per thread, meant for L2)
//   KC         depth of a KC block (the A block's columns, the B micro-panel's rows)
//   NC         columns of a packed B panel (shared by the team, meant for L3)
//   GROUP_KIB  packed B per work item of the small-M driver (M <= MC)
//   B_AHEAD    k steps the micro-kernel prefetches its B micro-panel ahead (0: none)
// Figures: bench/RESULTS.md, section "Tuning notes", by the [tag] at the end of a line.
struct Gemm {
#if defined(__AVX512F__)
  // AVX-512, micro-kernel 12 x 32; Intel Sapphire Rapids: 48 KiB L1d, 2 MiB L2 per core
  static constexpr int64_t MC        = 240;   // A block 240 x 512 x 4 B = 480 KiB, a quarter of L2  [gemm-avx512]
  static constexpr int64_t KC        = 512;   // amortises the C tile's load + store per block        [gemm-avx512]
  static constexpr int64_t NC        = 3072;  // packed B panel 512 x 3072 x 4 B = 6 MiB, in L3       [gemm-avx512]
  static constexpr int64_t GROUP_KIB = 512;   // a quarter of L2                                       [gemm-avx512]
  static constexpr int     B_AHEAD   = 8;     // 8 x 128 B ahead of the two B loads per k step        [gemm-avx512]
#elif defined(__AVX2__) && defined(__FMA__)
  // AVX2 + FMA, micro-kernel 6 x 16; AMD Zen 3: 32 KiB L1d, 512 KiB L2, 32 MiB L3
  static constexpr int64_t MC        = 144;   // A block 144 x 256 x 4 B = 144 KiB in L2              [gemm-avx2]
  static constexpr int64_t KC        = 256;   // B micro-panel 16 x 256 x 4 B = 16 KiB in L1           [gemm-avx2]
  static constexpr int64_t NC        = 4080;  // packed B panel 256 x 4080 x 4 B = 4 MiB in L3         [gemm-avx2]
  static constexpr int64_t GROUP_KIB = 256;   // half of L2                                            [gemm-avx2]
  static constexpr int     B_AHEAD   = 0;     // no software prefetch in this kernel (as before)      [gemm-avx2]
#else
  // scalar build, micro-kernel 4 x 8 (SSE2 on x86-64): the AVX2 sizes scaled down, not tuned
  static constexpr int64_t MC        = 128;
  static constexpr int64_t KC        = 256;
  static constexpr int64_t NC        = 2048;
  static constexpr int64_t GROUP_KIB = 256;
  static constexpr int     B_AHEAD   = 0;
#endif
  // every ISA
  static constexpr double  FLOPS_PER_THREAD = 1.0e6;          // a thread pays for itself at ~1 MFLOP  [gemm-threads]
  static constexpr int64_t PACK_AHEAD       = 6;              // source rows the packing loops prefetch ahead: short
                                                              // rows lda apart do not start the hardware prefetchers
  static constexpr int64_t PACK_CHUNK       = 4;              // micro-panels per packing work item (blocked driver)
  static constexpr int64_t WHOLE_A_FLOATS   = int64_t(4) << 20;  // small-M: all of op(A) packed up to 16 MiB
  static constexpr int64_t PACKED_B_FLOATS  = int64_t(2) << 20;  // blocked: packed B per column block <= 8 MiB (L3)
};

// ==== end GEMM ======================================================================



// ==== convolution (csrc/cpu/conv) ===================================================
// (filled by the convolution split)

// ==== end convolution ===============================================================

}  // namespace tuning
}  // namespace FL_ISA_NS
}  // namespace fl
