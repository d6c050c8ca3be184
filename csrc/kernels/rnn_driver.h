// Sequence-level forward and backward of one recurrent layer in one
// direction, written once for every backend.  A Backend provides
//   gemm(const GemmArgs<T>&)       C = alpha op(A) op(B) + beta C + bias (kernels/gemm_args.h)
//   cell(const RnnCellArgs<T>&)    one fused cell phase over all rows (kernels/rnn_cell.h)
//   copy(T* dst, const T* src, n), zero(T* dst, n)
//   prepack(slot, const GemmArgs<T>&)  op(B) packed once for the per-step GEMMs that
//                                  multiply by the same recurrent weight, or null
//                                  (then each step's GEMM reads the weight itself)
//   packed_rows_max()              the most rows a GEMM may have to read a packed B (0: none)
// (the CPU build in cpu/rnn/rnn_kernels.cpp, CUDA in cuda/rnn/rnn_cuda.cu).
//
// Forward: the input projection (gates = X W_ih^T + b_ih) is one GEMM over all T*B rows,
// or, where the backend packs weights, one GEMM per chunk of steps with W_ih packed once
// (a chunk's gates are still in cache when its steps read them); each step adds
// h_{t-1} W_hh^T + b_hh with one GEMM (two for Cho's GRU, whose candidate product needs r
// first) and runs the fused cell.
// Backward (reverse order of the forward): each step runs the fused cell backward,
// which turns the gate activations into pre-activation gradients in place, then
// dh_{t-1} += dgates_t W_hh with one GEMM.  After the loop the big GEMMs:
// dX = dgates W_ih (T*B rows), dW_ih += dgates^T X, dW_hh += dgates^T H_prev; the
// bias and peephole gradients are summed inside the cell pass.
#pragma once
#include <algorithm>
#include <cstdint>

#include "kernels/gemm_args.h"
#include "kernels/rnn_args.h"

namespace fl {
namespace FL_ISA_NS {

namespace rnn_detail {
// C[M,N] (+)= op(A) op(B) (+ bias per column)
template <class T>
GemmArgs<T> mm(int64_t M, int64_t N, int64_t K, const T* A, int64_t lda, bool ta, const T* B, int64_t ldb, bool tb,
               T* C, int64_t ldc, T beta, const T* bias = nullptr) {
  GemmArgs<T> g;
  g.M = M; g.N = N; g.K = K;
  g.A = A; g.lda = lda; g.trans_a = ta;
  g.B = B; g.ldb = ldb; g.trans_b = tb;
  g.C = C; g.ldc = ldc;
  g.alpha = T(1); g.beta = beta;
  if (bias) { g.bias = bias; g.bias_axis = BiasAxis::per_col; }
  return g;
}
template <class T>
GemmArgs<T> with_packed_b(GemmArgs<T> g, const T* packed) {
  g.packed_b = packed;
  return g;
}

// The cell arguments of step t for rows [b0, b0 + nb): every [B, *] array offset to row b0
// (the whole batch: 0, B).  y / dy and the gradient pointers are the caller's.
template <class T>
RnnCellArgs<T> step_cell(const RnnSeqArgs<T>& a, RnnCellArgs<T> c, int64_t t, int64_t b0, int64_t nb) {
  const int64_t H = a.H, GH = rnn_gate_count(a.cell) * H, BH = a.B * H;
  const int64_t prev = a.reverse ? t + 1 : t, cur = a.reverse ? t : t + 1;
  c.B = nb;
  c.t = t;
  c.gates = a.gates + (t * a.B + b0) * GH;
  c.h_prev = a.hs + prev * BH + b0 * H;
  c.h = a.hs + cur * BH + b0 * H;
  c.lengths = a.lengths ? a.lengths + b0 : nullptr;
  if (a.cell == RnnCell::lstm) {
    c.c_prev = a.aux + prev * BH + b0 * H;
    c.c = a.aux + cur * BH + b0 * H;
  } else {  // the GRUs: q (or r h) of step t; the torch GRU's h-projection in work
    c.aux = a.aux + t * BH + b0 * H;
    c.gh = a.work + b0 * GH;
    c.ldgh = GH;
  }
  return c;
}

// What every sequence driver does before and after its loop (the generic one below and
// the CPU's thread teams): the initial state into its slot; h_n (and c_n) out; the running
// state gradients into dh0 / dc0; and after the backward loop the large products
// dX = dgates W_ih, dW_ih += dgates^T X, dW_hh += dgates^T H_prev.
template <class T, class Backend>
void initial_states(const RnnSeqArgs<T>& a, Backend& be) {
  const int64_t BH = a.B * a.H, first = a.reverse ? a.T : 0;
  if (a.h0) be.copy(a.hs + first * BH, a.h0, BH); else be.zero(a.hs + first * BH, BH);
  if (a.cell == RnnCell::lstm) {
    if (a.c0) be.copy(a.aux + first * BH, a.c0, BH); else be.zero(a.aux + first * BH, BH);
  }
}
template <class T, class Backend>
void final_states(const RnnSeqArgs<T>& a, Backend& be) {
  const int64_t BH = a.B * a.H, last = a.reverse ? 0 : a.T;
  if (a.h_n) be.copy(a.h_n, a.hs + last * BH, BH);
  if (a.cell == RnnCell::lstm && a.c_n) be.copy(a.c_n, a.aux + last * BH, BH);
}
template <class T, class Backend>
void initial_grads(const RnnSeqArgs<T>& a, Backend& be) {
  const int64_t BH = a.B * a.H;
  if (a.dh_n) be.copy(a.dh0, a.dh_n, BH); else be.zero(a.dh0, BH);
  if (a.cell == RnnCell::lstm) {
    if (a.dc_n) be.copy(a.dc0, a.dc_n, BH); else be.zero(a.dc0, BH);
  }
}
template <class T, class Backend>
void input_and_weight_grads(const RnnSeqArgs<T>& a, Backend& be) {
  const int64_t H = a.H, I = a.I, GH = rnn_gate_count(a.cell) * H, BH = a.B * H, TB = a.T * a.B;
  const T* hprev = a.hs + (a.reverse ? BH : 0);  // the states that multiplied W_hh, in time order
  // dX = dgates W_ih
  if (I > 0) be.gemm(mm<T>(TB, I, GH, a.gates, GH, false, a.w_ih, I, false, a.dx, I, T(a.dx_accumulate ? 1 : 0)));
  // dW_ih += dgates^T X
  be.gemm(mm<T>(GH, I, TB, a.gates, GH, true, a.x, I, false, a.dw_ih, I, T(1)));
  // dW_hh += dgates_h^T H_prev
  switch (a.cell) {
    case RnnCell::lstm:
      be.gemm(mm<T>(GH, H, TB, a.gates, GH, true, hprev, H, false, a.dw_hh, H, T(1)));
      break;
    case RnnCell::gru:  // rows r, z from the gate gradients, n from dq
      be.gemm(mm<T>(2 * H, H, TB, a.gates, GH, true, hprev, H, false, a.dw_hh, H, T(1)));
      be.gemm(mm<T>(H, H, TB, a.aux, H, true, hprev, H, false, a.dw_hh + 2 * H * H, H, T(1)));
      break;
    case RnnCell::gru_cho:  // the candidate's product multiplied r * h_prev
      be.gemm(mm<T>(2 * H, H, TB, a.gates, GH, true, hprev, H, false, a.dw_hh, H, T(1)));
      be.gemm(mm<T>(H, H, TB, a.gates + 2 * H, GH, true, a.aux, H, false, a.dw_hh + 2 * H * H, H, T(1)));
      break;
  }
}
}  // namespace rnn_detail

template <class T, class Backend>
void rnn_seq_forward(const RnnSeqArgs<T>& a, Backend& be) {
  using rnn_detail::mm;
  const int64_t T_ = a.T, B = a.B, H = a.H, G = rnn_gate_count(a.cell), GH = G * H;
  if (T_ <= 0 || B <= 0) return;
  rnn_detail::initial_states(a, be);
  using rnn_detail::with_packed_b;
  // input projection, gates = X W_ih^T + b_ih: in chunks of steps that a packed W_ih serves
  // (computed just before their steps, see the loop), else for every step at once
  const int64_t rows_max = be.packed_rows_max();
  int64_t chunk = rows_max >= B ? rows_max / B : 0;
  const T* pwi = chunk > 0 && chunk < T_
                     ? be.prepack(2, mm<T>(chunk * B, GH, a.I, nullptr, a.I, false, a.w_ih, a.I, true, nullptr, GH, T(0)))
                     : nullptr;
  if (!pwi) be.gemm(mm<T>(T_ * B, GH, a.I, a.x, a.I, false, a.w_ih, a.I, true, a.gates, GH, T(0), a.b_ih));

  // the recurrent weight of every step, packed once (Cho's GRU: its r/z rows and its candidate rows)
  const bool cho = a.cell == RnnCell::gru_cho;
  const T* pw0 = be.prepack(0, mm<T>(B, cho ? 2 * H : GH, H, nullptr, H, false, a.w_hh, H, true, nullptr, GH, T(1)));
  const T* pw1 = cho ? be.prepack(1, mm<T>(B, H, H, nullptr, H, false, a.w_hh + 2 * H * H, H, true, nullptr, GH,
                                           T(1)))
                     : nullptr;
  RnnCellArgs<T> c0;
  c0.H = H; c0.ldg = GH; c0.peep = a.peep; c0.ldy = a.ldy;
  for (int64_t s = 0; s < T_; ++s) {
    if (pwi && s % chunk == 0) {  // the projection of steps [s, s1): time rows [t_lo, t_lo + n)
      const int64_t n = std::min(chunk, T_ - s), t_lo = a.reverse ? T_ - s - n : s;
      be.gemm(with_packed_b(mm<T>(n * B, GH, a.I, a.x + t_lo * B * a.I, a.I, false, a.w_ih, a.I, true,
                                  a.gates + t_lo * B * GH, GH, T(0), a.b_ih),
                            pwi));
    }
    const int64_t t = a.reverse ? T_ - 1 - s : s;
    RnnCellArgs<T> c = rnn_detail::step_cell(a, c0, t, 0, B);
    T* g = c.gates;
    const T* hp = c.h_prev;
    c.y = a.y ? a.y + t * B * a.ldy : nullptr;
    switch (a.cell) {
      case RnnCell::lstm:
        be.gemm(with_packed_b(mm<T>(B, GH, H, hp, H, false, a.w_hh, H, true, g, GH, T(1), a.b_hh), pw0));
        c.phase = RnnPhase::lstm_fwd;
        be.cell(c);
        break;
      case RnnCell::gru:
        be.gemm(with_packed_b(mm<T>(B, GH, H, hp, H, false, a.w_hh, H, true, a.work, GH, T(0), a.b_hh), pw0));
        c.phase = RnnPhase::gru_fwd;
        be.cell(c);
        break;
      case RnnCell::gru_cho:
        be.gemm(with_packed_b(mm<T>(B, 2 * H, H, hp, H, false, a.w_hh, H, true, g, GH, T(1), a.b_hh), pw0));
        c.phase = RnnPhase::cho_fwd1;
        be.cell(c);
        be.gemm(with_packed_b(mm<T>(B, H, H, c.aux, H, false, a.w_hh + 2 * H * H, H, true, g + 2 * H, GH, T(1),
                                    a.b_hh ? a.b_hh + 2 * H : nullptr),
                              pw1));
        c.phase = RnnPhase::cho_fwd2;
        be.cell(c);
        break;
    }
  }
  rnn_detail::final_states(a, be);
}

// Needs the buffers of the matching forward (gates, hs, aux), which it consumes
// (gates and, for the torch GRU, aux are overwritten with gradients).
template <class T, class Backend>
void rnn_seq_backward(const RnnSeqArgs<T>& a, Backend& be) {
  using rnn_detail::mm;
  const int64_t T_ = a.T, B = a.B, H = a.H, G = rnn_gate_count(a.cell), GH = G * H;
  const bool lstm = a.cell == RnnCell::lstm;
  if (B <= 0) return;
  rnn_detail::initial_grads(a, be);
  if (T_ <= 0) return;
  // W_hh (its first G*H or 2H rows) and, for the GRUs, its candidate rows, packed once for every step
  using rnn_detail::with_packed_b;
  const T* pw0 = be.prepack(0, mm<T>(B, H, lstm ? GH : 2 * H, nullptr, GH, false, a.w_hh, H, false, nullptr, H, T(1)));
  const T* pw1 =
      lstm ? nullptr : be.prepack(1, mm<T>(B, H, H, nullptr, GH, false, a.w_hh + 2 * H * H, H, false, nullptr, H, T(1)));
  RnnCellArgs<T> c0;
  c0.H = H; c0.ldg = GH; c0.peep = a.peep; c0.lddy = a.lddy;
  c0.dh = a.dh0; c0.dc = a.dc0; c0.db_ih = a.db_ih; c0.db_hh = a.db_hh; c0.dpeep = a.dpeep;
  for (int64_t s = T_ - 1; s >= 0; --s) {
    const int64_t t = a.reverse ? T_ - 1 - s : s;
    RnnCellArgs<T> c = rnn_detail::step_cell(a, c0, t, 0, B);
    T* g = c.gates;
    c.dy = a.dy ? a.dy + t * B * a.lddy : nullptr;
    switch (a.cell) {
      case RnnCell::lstm:
        c.phase = RnnPhase::lstm_bwd;
        be.cell(c);
        be.gemm(with_packed_b(mm<T>(B, H, GH, g, GH, false, a.w_hh, H, false, a.dh0, H, T(1)), pw0));
        break;
      case RnnCell::gru:
        c.phase = RnnPhase::gru_bwd;
        be.cell(c);
        be.gemm(with_packed_b(mm<T>(B, H, 2 * H, g, GH, false, a.w_hh, H, false, a.dh0, H, T(1)), pw0));
        be.gemm(with_packed_b(mm<T>(B, H, H, c.aux, H, false, a.w_hh + 2 * H * H, H, false, a.dh0, H, T(1)), pw1));
        break;
      case RnnCell::gru_cho:
        c.phase = RnnPhase::cho_bwd1;
        be.cell(c);
        // d(r h) = dA_n U_n
        be.gemm(
            with_packed_b(mm<T>(B, H, H, g + 2 * H, GH, false, a.w_hh + 2 * H * H, H, false, a.work, H, T(0)), pw1));
        c.phase = RnnPhase::cho_bwd2;
        c.aux = a.work;
        be.cell(c);
        be.gemm(with_packed_b(mm<T>(B, H, 2 * H, g, GH, false, a.w_hh, H, false, a.dh0, H, T(1)), pw0));
        break;
    }
  }
  rnn_detail::input_and_weight_grads(a, be);
}

}  // namespace FL_ISA_NS
}  // namespace fl
