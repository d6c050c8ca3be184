// Route a validated list call to the CPU kernel table or the CUDA build.
#pragma once
#include "bindings/array_interop.h"
#include "bindings/dlpack_abi.h"
#include "core/errors.h"

namespace fl {

inline bool on_cuda(const BorrowedLists& bl) {
  if (bl.device_type == dlpack::kCPU) return false;
  if (bl.device_type == dlpack::kCUDA) return true;
  throw ValueError("arrays on an unsupported device (DLPack device type " + std::to_string(bl.device_type) +
                   "): fusedlearn supports CPU and CUDA arrays");
}

}  // namespace fl
