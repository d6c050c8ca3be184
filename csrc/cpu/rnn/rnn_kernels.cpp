// CPU recurrent kernels, compiled once per instruction set: the fused cell
// phases (kernels/rnn_cell.h) vectorised over the hidden units, and the
// sequence driver (kernels/rnn_driver.h) running this build's GEMM.
//
// Threads: for float LSTM / torch-GRU sequences of at least ~1 MFLOP per step,
// one thread team runs the whole sequence instead of a parallel region per GEMM:
// over the batch rows where the packed weights fit in L2 (rnn_forward_rows /
// rnn_backward_rows: no barriers), else over gate columns and hidden units
// (rnn_forward_team / rnn_backward_team: one or two barriers per step).  Otherwise the generic
// driver's GEMMs thread themselves, and a cell phase splits the H columns
// into contiguous ranges (multiples of 16), one per thread, each running all
// B rows, so every bias / peephole gradient column has a single owner (no
// reductions) and a row's gates stay in that thread's cache between phases.
#include <algorithm>
#include <atomic>
#include <cstring>
#include <exception>
#include <cstdint>
#include <type_traits>
#include <vector>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "cpu/aligned_buf.h"
#include "cpu/isa_entry.h"
#include "cpu/team.h"
#include "kernels/rnn_cell.h"
#include "kernels/rnn_driver.h"

namespace fl {
namespace FL_ISA_NS {
namespace {

// below this many elements per step one thread runs the cell
constexpr int64_t kCellParallelMin = 8192;

// Rows per sweep over the columns: a few rows at a time keep the accesses
// close to sequential (one column block of every row in turn would walk the
// gate rows, G*H floats apart, down a handful of cache sets) while the
// column sums of the backward phases are folded into memory only once per
// block of rows.
constexpr int64_t kCellRows = 4;

template <class T, RnnPhase P>
void cell_range(const RnnCellArgs<T>& a, int64_t j0, int64_t j1) {
  for (int64_t b0 = 0; b0 < a.B; b0 += kCellRows) {
    const int64_t b1 = std::min(a.B, b0 + kCellRows);
    int64_t j = j0;
#ifdef FL_HAVE_SIMD
    if constexpr (std::is_same<T, float>::value) {
      for (; j + SimdOps::width <= j1; j += SimdOps::width) rnn_cell_cols<SimdOps, P>(a, j, b0, b1);
    }
#endif
    for (; j < j1; ++j) rnn_cell_cols<ScalarOps<T>, P>(a, j, b0, b1);
  }
}

template <class T>
using RangeFn = void (*)(const RnnCellArgs<T>&, int64_t, int64_t);

template <class T>
RangeFn<T> pick_phase(RnnPhase p) {
  switch (p) {
    case RnnPhase::lstm_fwd: return &cell_range<T, RnnPhase::lstm_fwd>;
    case RnnPhase::lstm_bwd: return &cell_range<T, RnnPhase::lstm_bwd>;
    case RnnPhase::gru_fwd: return &cell_range<T, RnnPhase::gru_fwd>;
    case RnnPhase::gru_bwd: return &cell_range<T, RnnPhase::gru_bwd>;
    case RnnPhase::cho_fwd1: return &cell_range<T, RnnPhase::cho_fwd1>;
    case RnnPhase::cho_fwd2: return &cell_range<T, RnnPhase::cho_fwd2>;
    case RnnPhase::cho_bwd1: return &cell_range<T, RnnPhase::cho_bwd1>;
    case RnnPhase::cho_bwd2: return &cell_range<T, RnnPhase::cho_bwd2>;
  }
  return nullptr;
}

template <class T>
void rnn_cell(const RnnCellArgs<T>& a) {
  const RangeFn<T> fn = pick_phase<T>(a.phase);
  if (!fn || a.B <= 0 || a.H <= 0) return;
  const int64_t chunks = (a.H + 15) / 16;  // 64-byte column blocks
  const int nt = a.B * a.H >= kCellParallelMin ? team_size(chunks) : 1;
  run_team(nt, [&](int k, int n) {
    const int64_t j0 = std::min(a.H, chunks * k / n * 16), j1 = std::min(a.H, chunks * (k + 1) / n * 16);
    if (j0 < j1) fn(a, j0, j1);
  });
}

// Packed recurrent weights, kept per thread between calls (each call repacks:
// the weights change between training steps); 64-byte aligned, as the GEMM's
// packed panels must be.
thread_local AlignedBuf tl_packed_w[3];  // W_hh (two parts for the GRUs), W_ih

// op(B) of `w` packed into `buf`, or null where the GEMM would not read a packed B.
const float* pack_b_into(AlignedBuf& buf, const GemmArgs<float>& w) {
  const int64_t sz = kernels().sgemm_packed_b_size(w);
  if (sz <= 0) return nullptr;
  float* d = buf.get(size_t(sz));
  kernels().sgemm_pack_b(w, d);
  return d;
}

template <class T>
struct CpuBackend {
  void gemm(const GemmArgs<T>& g) {
    if (g.M <= 0 || g.N <= 0) return;
    if constexpr (std::is_same<T, float>::value) kernels().sgemm(g); else kernels().dgemm(g);
  }
  // rows a GEMM may have and still read a packed B (0: this backend never packs)
  int64_t packed_rows_max() {
    if constexpr (std::is_same<T, float>::value) return kernels().sgemm_packed_max_m();
    return 0;
  }
  const T* prepack(int slot, const GemmArgs<T>& g) {
    if constexpr (std::is_same<T, float>::value) {
      return pack_b_into(tl_packed_w[slot], g);
    } else {
      return nullptr;  // the float64 reference GEMM does not pack
    }
  }
  void cell(const RnnCellArgs<T>& a) { rnn_cell<T>(a); }
  void copy(T* dst, const T* src, int64_t n) { std::memcpy(dst, src, size_t(n) * sizeof(T)); }
  void zero(T* dst, int64_t n) { std::memset(dst, 0, size_t(n) * sizeof(T)); }
};

// ---- forward with one thread team for the whole sequence (LSTM, torch's GRU; float) -------
// The generic driver (kernels/rnn_driver.h) runs each step's GEMM as a parallel region of its
// own and the cell after it, on one thread below kCellParallelMin: small layers lose to the
// forks, joins and the serial cell (bench/RESULTS.md, "Tuning notes" [rnn-column-team]).
// Here one team lives for the whole sequence.  Each thread owns a
// contiguous range of the G*H gate columns (whole 32-column GEMM panels): it computes them for
// the input projection of each chunk of steps and for every step's recurrent product, one GEMM
// each on its own slices of W_ih and W_hh, packed once.  A barrier, then each thread runs the
// cell of its range of hidden units (which reads every gate of those units), and a barrier
// again before the next step's product reads h_t.  (Owning hidden units in every gate instead
// takes G GEMMs per step, each packing h_{t-1} again: measured slower, [rnn-column-team].)
constexpr int64_t kTeamPanel = 32;  // gate columns per share (one GEMM micro-panel)
thread_local AlignedBuf tl_team_w[2];  // this thread's slices: W_hh, W_ih

int team_threads(const RnnSeqArgs<float>& a) {
#ifdef _OPENMP
  if (a.cell == RnnCell::gru_cho || omp_in_parallel() || a.T <= 0 || a.B <= 0 || a.H < 16) return 1;
  // below ~1 MFLOP per step the generic path's single thread is as fast
  if (2.0 * double(a.B) * double(rnn_gate_count(a.cell) * a.H) * double(a.H + a.I) < 1.0e6) return 1;
  return team_size((a.H + 15) / 16);
#else
  (void)a;
  return 1;
#endif
}

// op(B) of `w` packed into this thread's buffer tl_team_w[slot] (pack_b_into).
const float* team_pack_b(int slot, const GemmArgs<float>& w) { return pack_b_into(tl_team_w[slot], w); }

void rnn_forward_team(const RnnSeqArgs<float>& a, int nt) {
  using rnn_detail::mm;
  using rnn_detail::with_packed_b;
  const int64_t T_ = a.T, B = a.B, H = a.H, I = a.I, G = rnn_gate_count(a.cell), GH = G * H;
  const bool lstm = a.cell == RnnCell::lstm;
  CpuBackend<float> be;
  rnn_detail::initial_states(a, be);
  const int64_t rows_max = kernels().sgemm_packed_max_m();
  const int64_t chunk = rows_max >= B ? std::min(T_, rows_max / B) : 0;  // steps per projection chunk
  // without chunks (B above the packed GEMM's rows): the whole projection first, by the GEMM's own team
  if (chunk == 0) kernels().sgemm(mm<float>(T_ * B, GH, I, a.x, I, false, a.w_ih, I, true, a.gates, GH, 0.0f, a.b_ih));
  const RangeFn<float> cell_fn = pick_phase<float>(lstm ? RnnPhase::lstm_fwd : RnnPhase::gru_fwd);
  const int64_t panels = (GH + kTeamPanel - 1) / kTeamPanel, blocks16 = (H + 15) / 16;
  TeamGuard guard;
  run_team(nt, [&](int k, int n) {
    // gate columns [c0, c1) for the products, hidden units [j0, j1) for the cell
    const int64_t c0 = std::min(GH, panels * k / n * kTeamPanel), c1 = std::min(GH, panels * (k + 1) / n * kTeamPanel);
    const int64_t j0 = std::min(H, blocks16 * k / n * 16), j1 = std::min(H, blocks16 * (k + 1) / n * 16);
    const int64_t nc = c1 - c0;
    const float* pwh = nullptr;
    const float* pwi = nullptr;
    if (nc > 0) guard([&] {  // this thread's slices of the weights, packed once
      pwh = team_pack_b(0, mm<float>(B, nc, H, nullptr, H, false, a.w_hh + c0 * H, H, true, nullptr, GH, 1.0f));
      if (chunk > 0 && I > 0)
        pwi = team_pack_b(1, mm<float>(chunk * B, nc, I, nullptr, I, false, a.w_ih + c0 * I, I, true, nullptr, GH, 0.0f));
    });
    RnnCellArgs<float> proto;  // what every step's cell shares
    proto.H = H; proto.ldg = GH; proto.peep = a.peep; proto.ldy = a.ldy;
    proto.phase = lstm ? RnnPhase::lstm_fwd : RnnPhase::gru_fwd;
    for (int64_t s = 0; s < T_; ++s) {
      const int64_t t = a.reverse ? T_ - 1 - s : s;
      RnnCellArgs<float> c = rnn_detail::step_cell(a, proto, t, 0, B);
      c.y = a.y ? a.y + t * B * a.ldy : nullptr;
      float* gt = c.gates;
      const float* hp = c.h_prev;
      if (nc > 0) guard([&] {
        if (chunk > 0 && s % chunk == 0) {  // this thread's columns of the chunk's projection
          const int64_t m = std::min(chunk, T_ - s), t_lo = a.reverse ? T_ - s - m : s;
          kernels().sgemm(with_packed_b(mm<float>(m * B, nc, I, a.x + t_lo * B * I, I, false, a.w_ih + c0 * I, I,
                                                  true, a.gates + t_lo * B * GH + c0, GH, 0.0f,
                                                  a.b_ih ? a.b_ih + c0 : nullptr),
                                        pwi));
        }
        // the recurrent product of its columns: added to the gates (LSTM), or into gh (GRU)
        kernels().sgemm(with_packed_b(mm<float>(B, nc, H, hp, H, false, a.w_hh + c0 * H, H, true,
                                                (lstm ? gt : a.work) + c0, GH, lstm ? 1.0f : 0.0f,
                                                a.b_hh ? a.b_hh + c0 : nullptr),
                                      pwh));
      });
#pragma omp barrier
      if (j1 > j0) guard([&] { cell_fn(c, j0, j1); });
#pragma omp barrier
    }
  });
  guard.rethrow();
  rnn_detail::final_states(a, be);
}

// Backward with one team (see above): each thread owns hidden units [j0, j1).  Per step it
// runs the cell backward of its units (which reads dh of just those units and writes their
// gate gradients), a barrier, then dh_{t-1}[:, j0:j1] += dgates_t W_hh[:, j0:j1] from its own
// packed column slice of W_hh -- which the next step's cell of the same units reads, so one
// barrier per step.  The bias and peephole sums are per unit: each has a single owner.  The
// large products after the loop (dX, dW_ih, dW_hh) run as the generic driver's, threaded by
// the GEMM itself.
void rnn_backward_team(const RnnSeqArgs<float>& a, int nt) {
  using rnn_detail::mm;
  using rnn_detail::with_packed_b;
  const int64_t T_ = a.T, B = a.B, H = a.H, G = rnn_gate_count(a.cell), GH = G * H;
  const bool lstm = a.cell == RnnCell::lstm;
  CpuBackend<float> be;
  rnn_detail::initial_grads(a, be);
  const RangeFn<float> cell_fn = pick_phase<float>(lstm ? RnnPhase::lstm_bwd : RnnPhase::gru_bwd);
  const int64_t blocks16 = (H + 15) / 16;
  TeamGuard guard;
  run_team(nt, [&](int k, int n) {
    const int64_t j0 = std::min(H, blocks16 * k / n * 16), j1 = std::min(H, blocks16 * (k + 1) / n * 16);
    const int64_t nj = j1 - j0;
    const int64_t K0 = lstm ? GH : 2 * H;  // the gate rows of W_hh whose gradients the gates hold
    const float* pw0 = nullptr;
    const float* pw1 = nullptr;
    if (nj > 0) guard([&] {
      pw0 = team_pack_b(0, mm<float>(B, nj, K0, nullptr, GH, false, a.w_hh + j0, H, false, nullptr, H, 1.0f));
      if (!lstm) pw1 = team_pack_b(1, mm<float>(B, nj, H, nullptr, H, false, a.w_hh + 2 * H * H + j0, H, false, nullptr, H,
                                          1.0f));
    });
    RnnCellArgs<float> c0;
    c0.H = H; c0.ldg = GH; c0.peep = a.peep; c0.lddy = a.lddy;
    c0.dh = a.dh0; c0.dc = a.dc0; c0.db_ih = a.db_ih; c0.db_hh = a.db_hh; c0.dpeep = a.dpeep;
    c0.phase = lstm ? RnnPhase::lstm_bwd : RnnPhase::gru_bwd;
    for (int64_t s = T_ - 1; s >= 0; --s) {
      const int64_t t = a.reverse ? T_ - 1 - s : s;
      RnnCellArgs<float> c = rnn_detail::step_cell(a, c0, t, 0, B);
      c.dy = a.dy ? a.dy + t * B * a.lddy : nullptr;
      float* gt = c.gates;
      if (nj > 0) guard([&] { cell_fn(c, j0, j1); });
#pragma omp barrier
      if (nj > 0) guard([&] {  // dh_{t-1} of its units: every gate gradient of the step times its W_hh columns
        kernels().sgemm(
            with_packed_b(mm<float>(B, nj, K0, gt, GH, false, a.w_hh + j0, H, false, a.dh0 + j0, H, 1.0f), pw0));
        if (!lstm)
          kernels().sgemm(with_packed_b(mm<float>(B, nj, H, c.aux, H, false, a.w_hh + 2 * H * H + j0, H,
                                                  false, a.dh0 + j0, H, 1.0f),
                                        pw1));
      });
    }
  });
  guard.rethrow();
  rnn_detail::input_and_weight_grads(a, be);  // threaded by the GEMM itself
}

// ---- small layers: a team over the batch rows ---------------------------------------------------
// Batch rows never meet in the recurrence: row b of every step's gates needs only row b of
// h_{t-1}.  Where both weights, packed, stay in each core's L2 (kRowsTeamWeightBytes), each
// thread runs the whole sequence for its own rows with single-thread GEMMs on the shared packed
// weights and the cell of its rows: no barrier at all, and nothing a thread reads was written
// by another.  The bias / peephole gradient sums go to per-thread partials, added at the end.
// (The column team above needs two barriers per forward step, and each unit's gates come from
// both cores: bench/RESULTS.md, "Tuning notes" [rnn-rows-team].)
constexpr int64_t kRowsTeamWeightBytes = int64_t(1) << 20;
constexpr int64_t kRowsTeamMinRows = 8;  // rows per thread at least

int rows_team_threads(const RnnSeqArgs<float>& a) {
#ifdef _OPENMP
  if (a.cell == RnnCell::gru_cho || omp_in_parallel() || a.T <= 0 || a.B <= 0) return 1;
  const int64_t GH = rnn_gate_count(a.cell) * a.H;
  if (GH * (a.H + a.I) * int64_t(sizeof(float)) > kRowsTeamWeightBytes) return 1;
  if (a.B > kernels().sgemm_packed_max_m()) return 1;  // (the row blocks must read packed weights)
  if (2.0 * double(a.B) * double(GH) * double(a.H + a.I) < 1.0e6) return 1;  // as team_threads
  return int(std::min<int64_t>(configured_threads(), a.B / kRowsTeamMinRows));
#else
  (void)a;
  return 1;
#endif
}

void rnn_forward_rows(const RnnSeqArgs<float>& a, int nt) {
  using rnn_detail::mm;
  using rnn_detail::with_packed_b;
  const int64_t T_ = a.T, B = a.B, H = a.H, I = a.I, GH = rnn_gate_count(a.cell) * H;
  const bool lstm = a.cell == RnnCell::lstm;
  CpuBackend<float> be;
  rnn_detail::initial_states(a, be);
  // the weights packed once, by this thread, for every row block (the packing ignores M)
  const float* pwh = team_pack_b(0, mm<float>(B, GH, H, nullptr, H, false, a.w_hh, H, true, nullptr, GH, 1.0f));
  const float* pwi =
      I > 0 ? team_pack_b(1, mm<float>(B, GH, I, nullptr, I, false, a.w_ih, I, true, nullptr, GH, 0.0f)) : nullptr;
  const RangeFn<float> cell_fn = pick_phase<float>(lstm ? RnnPhase::lstm_fwd : RnnPhase::gru_fwd);
  TeamGuard guard;
  run_team(nt, [&](int k, int n) {
    const int64_t b0 = B * k / n, nb = B * (k + 1) / n - b0;
    RnnCellArgs<float> c0;
    c0.H = H; c0.ldg = GH; c0.peep = a.peep; c0.ldy = a.ldy;
    c0.phase = lstm ? RnnPhase::lstm_fwd : RnnPhase::gru_fwd;
    if (nb > 0) guard([&] {
      for (int64_t s = 0; s < T_; ++s) {
        const int64_t t = a.reverse ? T_ - 1 - s : s;
        RnnCellArgs<float> c = rnn_detail::step_cell(a, c0, t, b0, nb);
        c.y = a.y ? a.y + (t * B + b0) * a.ldy : nullptr;
        kernels().sgemm(with_packed_b(mm<float>(nb, GH, I, a.x + (t * B + b0) * I, I, false, a.w_ih, I, true,
                                                c.gates, GH, 0.0f, a.b_ih),
                                      pwi));  // (I = 0: just the bias, as the generic driver)
        // the recurrent product: added to the gates (LSTM), or into gh (GRU)
        kernels().sgemm(with_packed_b(mm<float>(nb, GH, H, c.h_prev, H, false, a.w_hh, H, true,
                                                lstm ? c.gates : a.work + b0 * GH, GH, lstm ? 1.0f : 0.0f, a.b_hh),
                                      pwh));
        cell_fn(c, 0, H);
      }
    });
  });
  guard.rethrow();
  rnn_detail::final_states(a, be);
}

void rnn_backward_rows(const RnnSeqArgs<float>& a, int nt) {
  using rnn_detail::mm;
  using rnn_detail::with_packed_b;
  const int64_t T_ = a.T, B = a.B, H = a.H, GH = rnn_gate_count(a.cell) * H;
  const bool lstm = a.cell == RnnCell::lstm;
  const int64_t K0 = lstm ? GH : 2 * H;  // the gate rows of W_hh whose gradients the gates hold
  CpuBackend<float> be;
  rnn_detail::initial_grads(a, be);
  const float* pw0 = team_pack_b(0, mm<float>(B, H, K0, nullptr, GH, false, a.w_hh, H, false, nullptr, H, 1.0f));
  const float* pw1 =
      lstm ? nullptr : team_pack_b(1, mm<float>(B, H, H, nullptr, H, false, a.w_hh + 2 * H * H, H, false, nullptr, H, 1.0f));
  const RangeFn<float> cell_fn = pick_phase<float>(lstm ? RnnPhase::lstm_bwd : RnnPhase::gru_bwd);
  // per-thread partial sums of the bias / peephole gradients: [db_ih GH | db_hh GH | dpeep 3H]
  const int64_t psz = 2 * GH + 3 * H;
  std::vector<float> partial(size_t(nt * psz), 0.0f);
  TeamGuard guard;
  run_team(nt, [&](int k, int n) {
    const int64_t b0 = B * k / n, nb = B * (k + 1) / n - b0;
    float* mine = partial.data() + k * psz;
    RnnCellArgs<float> c0;
    c0.H = H; c0.ldg = GH; c0.peep = a.peep; c0.lddy = a.lddy;
    c0.phase = lstm ? RnnPhase::lstm_bwd : RnnPhase::gru_bwd;
    c0.dh = a.dh0 + b0 * H;
    c0.dc = lstm ? a.dc0 + b0 * H : nullptr;
    c0.db_ih = a.db_ih ? mine : nullptr;
    c0.db_hh = a.db_hh ? mine + GH : nullptr;
    c0.dpeep = a.dpeep ? mine + 2 * GH : nullptr;
    if (nb > 0) guard([&] {
      for (int64_t s = T_ - 1; s >= 0; --s) {
        const int64_t t = a.reverse ? T_ - 1 - s : s;
        RnnCellArgs<float> c = rnn_detail::step_cell(a, c0, t, b0, nb);
        c.dy = a.dy ? a.dy + (t * B + b0) * a.lddy : nullptr;
        cell_fn(c, 0, H);
        kernels().sgemm(with_packed_b(mm<float>(nb, H, K0, c.gates, GH, false, a.w_hh, H, false, c0.dh, H, 1.0f), pw0));
        if (!lstm)
          kernels().sgemm(with_packed_b(
              mm<float>(nb, H, H, c.aux, H, false, a.w_hh + 2 * H * H, H, false, c0.dh, H, 1.0f), pw1));
      }
    });
  });
  guard.rethrow();
  for (int k = 0; k < nt; ++k) {  // the partial sums, in thread order (deterministic)
    const float* p = partial.data() + k * psz;
    for (int64_t i = 0; i < GH; ++i) {
      if (a.db_ih) a.db_ih[i] += p[i];
      if (a.db_hh) a.db_hh[i] += p[GH + i];
    }
    if (a.dpeep)
      for (int64_t i = 0; i < 3 * H; ++i) a.dpeep[i] += p[2 * GH + i];
  }
  rnn_detail::input_and_weight_grads(a, be);  // threaded by the GEMM itself
}

template <class T>
void rnn_forward(const RnnSeqArgs<T>& a) {
  if constexpr (std::is_same<T, float>::value) {
    if (const int nr = rows_team_threads(a); nr > 1) {
      rnn_forward_rows(a, nr);
      return;
    }
    if (const int nt = team_threads(a); nt > 1) {
      rnn_forward_team(a, nt);
      return;
    }
  }
  CpuBackend<T> be;
  rnn_seq_forward<T>(a, be);
}
template <class T>
void rnn_backward(const RnnSeqArgs<T>& a) {
  if constexpr (std::is_same<T, float>::value) {
    if (const int nr = rows_team_threads(a); nr > 1) {
      rnn_backward_rows(a, nr);
      return;
    }
    if (const int nt = team_threads(a); nt > 1 && a.B > 0) {
      rnn_backward_team(a, nt);
      return;
    }
  }
  CpuBackend<T> be;
  rnn_seq_backward<T>(a, be);
}

}  // namespace

void fill_rnn_kernels(CpuKernels& k) {
  k.rnn_cell_f32 = &rnn_cell<float>;
  k.rnn_cell_f64 = &rnn_cell<double>;
  k.rnn_forward_f32 = &rnn_forward<float>;
  k.rnn_forward_f64 = &rnn_forward<double>;
  k.rnn_backward_f32 = &rnn_backward<float>;
  k.rnn_backward_f64 = &rnn_backward<double>;
}

}  // namespace FL_ISA_NS
}  // namespace fl
