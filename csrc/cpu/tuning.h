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
// [tuning] = bench/RESULTS.md, section "Convolution tuning"; [direct] = its section "Update: direct
// kernel for small reductions".
// im2col + GEMM (conv_im2col.cpp)
constexpr int64_t kColBudget  = 256 << 10;  // bytes of an im2col band: half an L2, room for the GEMM panels  [tuning]
constexpr int64_t kSmallImage = 256;        // output pixels below which a band spans several images           [tuning]
constexpr int64_t kBandCols   = 256;        // target columns of a multi-image band: 256-1024 alike, 256 best for LeNet [tuning]
constexpr int64_t kBandBudget = 1 << 20;    // cap on a multi-image band's bytes (stays in L2)                  [tuning]
// direct, vectors along the width (conv_direct.cpp)
constexpr int64_t kDirectMaxTaps = 1000;    // Cg*R*S up to which the direct kernel runs (a stack array bound)   [direct]
constexpr int     kDirectNV      = 2;       // vectors per chunk: KB*2 accumulators; more rows per block no faster [tuning]
// channel-vector, vectors along the output channels (conv_channel_vector.cpp)
constexpr int64_t kCvTapBlock    = 4096;      // taps per block: the longest blocks measured fastest            [tuning]
constexpr int64_t kCvOutBytes    = 256 << 10; // y^T of a forward pixel chunk (L2)                              [tuning]
constexpr int64_t kCvChunkBytes  = 32 << 10;  // g^T of a weight-gradient pixel chunk (L1): 32 KB best or equal [tuning]
constexpr int64_t kLookAheadTaps = 8;         // taps between two prefetched lines of a forward tile            [tuning]
#if defined(__AVX512F__)
constexpr int kCvFwdMaxKV = 4;  // forward tile: 4 vectors x 6 pixels = 24 of the 32 registers
constexpr int kCvDwMaxKV  = 4;  // weight-gradient tile: 4 vectors x 6 taps = 24 of 32
#else
constexpr int kCvFwdMaxKV = 2;  // 2 x 6 = 12 of the 16 registers
constexpr int kCvDwMaxKV  = 2;  // 12 of 16
#endif
constexpr int kCvFwdPixels     = 6;  // pixels per forward tile with kCvFwdMaxKV vectors
constexpr int kCvFwdPixelsRest = 8;  // pixels per tile for a narrower remainder (8 pointer registers)
constexpr int kCvDwTaps        = 6;  // taps per weight-gradient tile with kCvDwMaxKV vectors
constexpr int kCvDwTapsRest    = 8;  // taps per tile for a narrower remainder
// Padding of the pixel / tap tables and tile buffers: a multiple of every tile length, so a last
// tile reads at most kTilePad - 1 entries past the end (24 = lcm(6, 8)).
constexpr int64_t kTilePad = 24;
static_assert(kTilePad % kCvFwdPixels == 0 && kTilePad % kCvFwdPixelsRest == 0 && kTilePad % kCvDwTaps == 0 &&
                  kTilePad % kCvDwTapsRest == 0,
              "kTilePad must be a multiple of every tile length");

// ==== end convolution ===============================================================

}  // namespace tuning
}  // namespace FL_ISA_NS
}  // namespace fl
