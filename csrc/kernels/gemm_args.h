// The one GEMM interface shared by the CPU (BLIS-style) and CUDA builds:
//   C = act(alpha * op(A) @ op(B) + beta * C + bias)
// row-major, op(X) = X or X^T, with leading dimensions (strided
// sub-matrices) and a fused epilogue.  Plain data: no ISA-specific code here.
#pragma once
#include <cstdint>

namespace fl {

enum class Activation : int { identity = 0, relu = 1, tanh = 2, sigmoid = 3 };
enum class BiasAxis : int { none = 0, per_col = 1, per_row = 2 };  // per_col: bias[N] added to each row

template <class T>
struct GemmArgs {
  int64_t M = 0, N = 0, K = 0;     // op(A) is M x K, op(B) is K x N, C is M x N
  bool trans_a = false, trans_b = false;
  T alpha = 1, beta = 0;           // beta == 0: C is write-only (may hold NaN on entry)
  const T* A = nullptr; int64_t lda = 0;  // row-major leading dimension of A as stored
  const T* B = nullptr; int64_t ldb = 0;
  T* C = nullptr; int64_t ldc = 0;
  const T* bias = nullptr; BiasAxis bias_axis = BiasAxis::none;
  Activation act = Activation::identity;
  T* preact = nullptr; int64_t ld_preact = 0;  // optional: alpha*AB + beta*C + bias before act
  // optional (CPU float32): op(B) already packed by this kernel table's
  // sgemm_pack_b for the same M, K, N, B and transposes, so a B used by many
  // calls (a recurrent weight, every time step) is packed once.  The B fields
  // above must still describe it: a driver that cannot use the packed copy
  // (or a backend without packing) reads B itself.
  const T* packed_b = nullptr;
};

}  // namespace fl
