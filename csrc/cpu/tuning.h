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
// (filled by the convolution split)

// ==== end convolution ===============================================================

}  // namespace tuning
}  // namespace FL_ISA_NS
}  // namespace fl
