// Adafactor (Shazeer & Stern 2018), torch.optim.Adafactor's variant: the
// arguments of one fused step on one tensor.  Equations: docs/math/optimizers.md,
// "Adafactor".  Plain data, shared by every backend.
#pragma once
#include <cstdint>

namespace fl {

struct AdafactorArgs {
  void* param = nullptr;       // [batch, rows, cols] (factored) or [n], written
  const void* grad = nullptr;  // same shape, read
  void* row_var = nullptr;     // factored: [batch, rows], written
  void* col_var = nullptr;     // factored: [batch, cols], written
  void* variance = nullptr;    // not factored: [n], written
  int64_t n = 0;               // numel
  int64_t batch = 1, rows = 1, cols = 1;  // factored shape (param.shape[:-2], [-2], [-1])
  bool factored = false;
  // per-step constants (the host computes them from step and the hyperparameters)
  double beta2_weight = 1;  // 1 - beta2_t = step^beta2_decay (the lerp weight)
  double rho = 0;           // min(lr, 1/sqrt(step))
  double eps1 = 0, eps2 = 0, d = 1;
  double param_scale = 1;   // 1 - lr * weight_decay
  bool maximize = false;
};

}  // namespace fl
