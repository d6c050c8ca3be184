// Plain-data arguments of the recurrent kernels (CPU and CUDA share them).
//
// Layouts (row-major, torch's gate order):
//   LSTM  G = 4 gates i, f, g, o        GRU  G = 3 gates r, z, n
//   gates  [T*B, G*H]  row (t, b) at gates + (t*B + b) * G*H.  Forward: the
//          pre-activations, overwritten by the gate activations; backward:
//          overwritten by the gradients w.r.t. the pre-activations (so one
//          buffer serves both passes and the weight-gradient GEMMs read it as is).
//   hs     [(T+1)*B, H] hidden states by slot: a forward-direction layer reads
//          h_{t-1} from slot t and writes h_t to slot t+1; a reverse one reads
//          slot t+1 and writes slot t.  Either way the states that multiply
//          W_hh at times 0..T-1 are T*B consecutive rows (the dW_hh GEMM operand).
//   aux    LSTM: cell states, same slots as hs, [(T+1)*B, H].
//          GRU (reset after): q_t = W_hn h_{t-1} + b_hn, [T*B, H] (backward: dq).
//          GRU (Cho, reset before): r_t * h_{t-1}, [T*B, H].
//   work   [B, G*H] per-step scratch.
// Variable lengths: row b is active at time t iff t < lengths[b]; an inactive
// row keeps its state, outputs zeros and passes its state gradient through.
#pragma once
#include <cstdint>

namespace fl {

enum class RnnCell : int { lstm = 0, gru = 1 /* reset after: torch / cuDNN */, gru_cho = 2 /* reset before */ };

inline int rnn_gate_count(RnnCell c) { return c == RnnCell::lstm ? 4 : 3; }

// Phases of one fused cell step (everything after the matrix products).
enum class RnnPhase : int {
  lstm_fwd = 0,  // gates (pre-activations incl. both products and biases), c_prev -> acts, c, h, y
  lstm_bwd,      // acts, c_prev, c, dh (+dy), dc -> dgates, dc_prev, dh <- 0; db_*, dpeep accumulated
  gru_fwd,       // gates (x-proj + b_ih), gh (h-proj + b_hh), h_prev -> acts, aux = q, h, y
  gru_bwd,       // acts, aux = q, h_prev, dh (+dy) -> dgates (dAr, dAz, dAn), aux = dq, dh <- dh*z
  cho_fwd1,      // gates[r,z] (incl. U_rz h + b) -> r, z; aux = r * h_prev
  cho_fwd2,      // gates[n] (incl. U_n (r h) + b) -> n; h, y
  cho_bwd1,      // acts, h_prev, dh (+dy) -> dAz, dAn; dh <- dh*z
  cho_bwd2,      // aux = d(r h) (= dAn U_n) -> dAr; dh += d(r h) * r
};

// One time step over all B rows.  Unused pointers stay null.
template <class T>
struct RnnCellArgs {
  RnnPhase phase = RnnPhase::lstm_fwd;
  int64_t B = 0, H = 0;
  T* gates = nullptr; int64_t ldg = 0;       // [B, G*H], row stride ldg
  const T* gh = nullptr; int64_t ldgh = 0;   // gru_fwd: [B, 3H]
  const T* h_prev = nullptr;                 // [B, H]
  const T* c_prev = nullptr;                 // [B, H]
  T* h = nullptr;                            // [B, H]  (fwd output)
  T* c = nullptr;                            // [B, H]  (lstm: fwd output, bwd input)
  T* y = nullptr; int64_t ldy = 0;           // [B, *] output rows (fwd), nullable
  T* aux = nullptr;                          // [B, H]  see RnnPhase
  const T* peep = nullptr;                   // lstm [3H]: p_i, p_f, p_o, or null
  const int64_t* lengths = nullptr;          // [B] or null (all rows active)
  int64_t t = 0;                             // the time index (for lengths)
  // backward
  T* dh = nullptr;                           // [B, H] in: dL/dh_t from step t+1; out: the direct part of dL/dh_{t-1}
  const T* dy = nullptr; int64_t lddy = 0;   // [B, *] gradient of the output rows, nullable
  T* dc = nullptr;                           // [B, H] in: dL/dc_t (from t+1); out: dL/dc_{t-1}
  T* db_ih = nullptr;                        // [G*H] accumulated, nullable
  T* db_hh = nullptr;                        // [G*H] accumulated, nullable
  T* dpeep = nullptr;                        // [3H] accumulated, nullable
};

// One layer, one direction, the whole sequence.  See the layouts above.
template <class F>
struct RnnSeqArgs {
  RnnCell cell = RnnCell::lstm;
  int64_t T = 0, B = 0, I = 0, H = 0;
  bool reverse = false;
  const int64_t* lengths = nullptr;          // [B] or null
  const F* x = nullptr;                      // [T*B, I] contiguous
  const F* w_ih = nullptr;                   // [G*H, I]
  const F* w_hh = nullptr;                   // [G*H, H]
  const F* b_ih = nullptr;                   // [G*H] or null
  const F* b_hh = nullptr;                   // [G*H] or null
  const F* peep = nullptr;                   // lstm [3H] or null
  const F* h0 = nullptr;                     // [B, H] or null (zeros)
  const F* c0 = nullptr;                     // [B, H] or null (zeros)
  F* y = nullptr; int64_t ldy = 0;           // row (t, b) at y + (t*B + b) * ldy; H values written
  F* h_n = nullptr;                          // [B, H]
  F* c_n = nullptr;                          // [B, H] (lstm)
  F* gates = nullptr;                        // [T*B, G*H]
  F* hs = nullptr;                           // [(T+1)*B, H]
  F* aux = nullptr;                          // see above
  F* work = nullptr;                         // [B, G*H]
  // backward (gradients are accumulated into dw_*, db_*, dpeep; dx is written or accumulated)
  const F* dy = nullptr; int64_t lddy = 0;   // like y; null: no gradient from the outputs
  const F* dh_n = nullptr;                   // [B, H] or null
  const F* dc_n = nullptr;                   // [B, H] or null
  F* dx = nullptr;                           // [T*B, I]
  bool dx_accumulate = false;
  F* dw_ih = nullptr;
  F* dw_hh = nullptr;
  F* db_ih = nullptr;                        // nullable (bias=False)
  F* db_hh = nullptr;
  F* dpeep = nullptr;                        // nullable
  F* dh0 = nullptr;                          // [B, H] written
  F* dc0 = nullptr;                          // [B, H] written (lstm)
};

}  // namespace fl
