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
// (filled by the GEMM micro-kernel split)

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
