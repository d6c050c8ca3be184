// CPU recurrent kernels, compiled once per instruction set: the fused cell
// phases (cpu/rnn/rnn_cell.h) vectorised over the hidden units, and the
// sequence driver (cpu/rnn/rnn_driver.h) running this build's GEMM.
//
// Threads: the GEMMs thread themselves; a cell phase splits the H columns
// into contiguous ranges (multiples of 16), one per thread, each running all
// B rows, so every bias / peephole gradient column has a single owner (no
// reductions) and a row's gates stay in that thread's cache between phases.
#include <algorithm>
#include <cstring>
#include <cstdint>
#include <type_traits>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "cpu/aligned_buf.h"
#include "cpu/isa_entry.h"
#include "cpu/rnn/rnn_cell.h"
#include "cpu/rnn/rnn_driver.h"

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
#ifdef _OPENMP
  int nt = configured_threads();
  if (nt > 1 && a.B * a.H >= kCellParallelMin && !omp_in_parallel()) {
    const int64_t chunks = (a.H + 15) / 16;  // 64-byte column blocks
    nt = int(std::min<int64_t>(nt, chunks));
#pragma omp parallel num_threads(nt)
    {
      const int64_t k = omp_get_thread_num(), n = omp_get_num_threads();
      const int64_t j0 = std::min(a.H, chunks * k / n * 16), j1 = std::min(a.H, chunks * (k + 1) / n * 16);
      if (j0 < j1) fn(a, j0, j1);
    }
    return;
  }
#endif
  fn(a, 0, a.H);
}

// Packed recurrent weights, kept per thread between calls (each call repacks:
// the weights change between training steps); 64-byte aligned, as the GEMM's
// packed panels must be.
thread_local AlignedBuf tl_packed_w[3];  // W_hh (two parts for the GRUs), W_ih

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
      const int64_t n = kernels().sgemm_packed_b_size(g);
      if (n <= 0) return nullptr;
      float* dst = tl_packed_w[slot].get(size_t(n));
      kernels().sgemm_pack_b(g, dst);
      return dst;
    } else {
      return nullptr;  // the float64 reference GEMM does not pack
    }
  }
  void cell(const RnnCellArgs<T>& a) { rnn_cell<T>(a); }
  void copy(T* dst, const T* src, int64_t n) { std::memcpy(dst, src, size_t(n) * sizeof(T)); }
  void zero(T* dst, int64_t n) { std::memset(dst, 0, size_t(n) * sizeof(T)); }
};

template <class T>
void rnn_forward(const RnnSeqArgs<T>& a) {
  CpuBackend<T> be;
  rnn_seq_forward<T>(a, be);
}
template <class T>
void rnn_backward(const RnnSeqArgs<T>& a) {
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
