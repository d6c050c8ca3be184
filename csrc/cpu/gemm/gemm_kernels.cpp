// CPU GEMM with a fused epilogue, compiled once per instruction set.
//
//   C = act(alpha * op(A) op(B) + beta * C + bias),  preact (optional) = the argument of act
//
// float32: the BLIS design.  Five loops around a register-blocked micro-kernel
// (cpu/gemm/gemm_micro.h, one file per ISA named by its shape):
//   jc over N in NC columns   -> pack the B panel  op(B)[pc:pc+KC, jc:jc+NC] into NR-column micro-panels (L3)
//    pc over K in KC          (shared by all threads; each packs a share of the micro-panels)
//     ic over M in MC rows    -> pack the A block  op(A)[ic:ic+MC, pc:pc+KC] into MR-row micro-panels (L2, per thread)
//      jr over NC in NR       -> one B micro-panel stays in L1
//       ir over MC in MR      -> micro-kernel: MR x NR tile of C in registers
// Packing handles the transposes and leading dimensions and pads the last
// micro-panels with zeros.  A tile short of rows runs a micro-kernel
// instantiated for just those rows; one short of columns is computed into a
// small buffer and copied out (cpu/gemm/gemm_tile.h).  The epilogue
// (bias, pre-activation store, activation) runs on each tile right after its
// last KC block is written, while the tile is still in L1: Linear + bias +
// activation is one pass over C.
//
// Two drivers share the packing and the micro-kernel:
//  * M > MC (sgemm_blocked): the loops above.  Threads (OpenMP) pack each B
//    panel together (a barrier, then shared), and split the rows: each packs
//    its own A blocks into its own L2.
//  * M <= MC (sgemm_small_m; the RNN-like shapes, a batch times a wide
//    weight): the A block is packed once per KC step by every thread (it is
//    small), the threads split the NR micro-panels of B and pack them in L2
//    sized groups right before use, prefetching the next group's source while
//    the current one computes (B is read from memory once; with few rows that
//    read, not the arithmetic, is what needs hiding).  No barriers.
// Below ~2 MFLOP one thread runs (waking a second costs more).
// Cache blocking and the other tuned constants: cpu/tuning.h (tuning::Gemm);
// MC / KC / NC and the small-M driver's packed-B group size can be overridden
// with FUSEDLEARN_GEMM_MC / _KC / _NC / _GROUP_KIB for tuning elsewhere.
//
// float64: a plain reference path (row-parallel i-k-j loops accumulated in
// double), for gradient checks; not tuned.
#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <new>
#include <vector>
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif
#ifdef _OPENMP
#include <omp.h>
#endif

#include "kernels/gemm_args.h"
#include "cpu/aligned_buf.h"
#include "cpu/transpose8x8.h"
#include "cpu/gemm/gemm_micro.h"
#include "cpu/gemm/gemm_tile.h"
#include "cpu/isa_entry.h"
#include "cpu/team.h"
#include "cpu/tuning.h"

namespace fl {
namespace FL_ISA_NS {
namespace {

// C = beta * C (no product: K == 0 or alpha == 0), then the epilogue.
template <class T>
void scale_only(const GemmArgs<T>& g) {
  const EpilogueFn<T> epi = pick_epilogue(g);
  for (int64_t i = 0; i < g.M; ++i) {
    T* c = g.C + i * g.ldc;
    if (g.beta == T(0)) {
      std::fill(c, c + g.N, T(0));
    } else if (g.beta != T(1)) {
      for (int64_t j = 0; j < g.N; ++j) c[j] *= g.beta;
    }
  }
  if (epi) epi(g, 0, 0, g.M, g.N);
}

// Threads for a product (cpu/team.h): one per tuning::Gemm::FLOPS_PER_THREAD.
int gemm_threads(int64_t M, int64_t N, int64_t K) {
  const double flops = 2.0 * double(M) * double(N) * double(K);
  return team_for(INT64_MAX, flops, tuning::Gemm::FLOPS_PER_THREAD);
}

// ---- packing buffers: 64-byte aligned, grown on demand, reused per thread (cpu/aligned_buf.h) ----
thread_local AlignedBuf tl_a_buf;
thread_local AlignedBuf tl_b_buf;

using UK = MicroKernel;
using Tune = tuning::Gemm;
constexpr int MR = UK::MR, NR = UK::NR;


// Prefetch every cache line of the n floats at p (n > 0) with temporal
// locality L (3: into L1, 2: into L2 and below).
template <int L>
inline void prefetch_floats(const float* p, int64_t n) {
  for (int64_t c = 0; c < n; c += 16) __builtin_prefetch(p + c, 0, L);
  __builtin_prefetch(p + n - 1, 0, L);  // the last line when p is not line-aligned
}

// Source rows the packing loops prefetch ahead of the row they copy (rows a
// few hundred bytes long and lda apart do not start the hardware prefetchers).
constexpr int64_t kPackAhead = Tune::PACK_AHEAD;

// Floats past the packed A block that pack_a may scribble on (its transposing
// stores run up to 8 - MR floats long).
constexpr int64_t kASlack = 16;

// op(A)[i0 + i, k0 + k] for i < mc, k < kc into MR-row micro-panels:
// dst[(i / MR) * MR * kc + k * MR + i % MR], rows past mc zero.
void pack_a(const GemmArgs<float>& g, int64_t i0, int64_t k0, int64_t mc, int64_t kc, float* __restrict dst) {
  if (g.trans_a) {
    // A stored K x M: row k of the stored matrix holds op(A)(i0.., k)
    // contiguously.  Walk each such row once, across all the micro-panels;
    // walking panel by panel would revisit kc rows that lie lda apart (and so
    // share a handful of L1 sets) once per panel, missing L1 every time.
    const int64_t full = mc / MR * MR;
    for (int64_t k = 0; k < kc; ++k) {
      const float* __restrict src = g.A + (k0 + k) * g.lda + i0;
      if (k + kPackAhead < kc) {  // short rows far apart: prefetch a few rows ahead
        prefetch_floats<3>(src + kPackAhead * g.lda, mc);
      }
      for (int64_t ir = 0; ir < full; ir += MR) {
        float* __restrict d = dst + ir * kc + k * MR;
        for (int i = 0; i < MR; ++i) d[i] = src[ir + i];
      }
      if (full < mc) {
        float* __restrict d = dst + full * kc + k * MR;
        const int64_t m = mc - full;
        for (int i = 0; i < MR; ++i) d[i] = i < m ? src[full + i] : 0.0f;
      }
    }
    return;
  }
  for (int64_t ir = 0; ir < mc; ir += MR) {
    const int64_t m = std::min<int64_t>(MR, mc - ir);
    float* __restrict d = dst + ir * kc;
    // A stored M x K: row i is contiguous along k
    const float* rows[MR];
    for (int i = 0; i < MR; ++i) rows[i] = g.A + (i0 + ir + std::min<int64_t>(i, m - 1)) * g.lda + k0;
#if defined(__AVX2__)
    if (MR <= 8 && m == MR) {
      // 8 x 8 transposes of rows 0..MR-1 (the last repeated up to 8): each
      // stored column carries 8 - MR values of garbage past its MR, which
      // the next column's store (or the next panel, or the buffer's slack)
      // overwrites, because k and the panels go in increasing order.
      const float* r8[8];
      for (int i = 0; i < 8; ++i) r8[i] = rows[std::min(i, MR - 1)];
      int64_t k = 0;
      for (; k + 8 <= kc; k += 8) transpose8x8(r8, k, d + k * MR, MR);
      for (; k < kc; ++k)
        for (int i = 0; i < MR; ++i) d[k * MR + i] = rows[i][k];
      continue;
    }
#endif
    if (m == MR) {
      for (int64_t k = 0; k < kc; ++k)
        for (int i = 0; i < MR; ++i) d[k * MR + i] = rows[i][k];
    } else {
      for (int64_t k = 0; k < kc; ++k)
        for (int i = 0; i < MR; ++i) d[k * MR + i] = i < m ? rows[i][k] : 0.0f;
    }
  }
}


// Distance between packed B micro-panels: NR * kc plus one cache line, so that
// the panels a packing loop writes side by side (and the rows it reads) do not
// all map to the same L1 sets (NR * kc * 4 B is a multiple of 4 KiB).
inline int64_t b_panel_stride(int64_t kc) { return NR * kc + 16; }

// op(B)[k0 + k, j0 + j] for k < kc, micro-panels p in [p_lo, p_hi) of the
// NC block starting at j0 (nc columns): dst[p * b_panel_stride(kc) + k * NR + j % NR].
void pack_b(const GemmArgs<float>& g, int64_t k0, int64_t j0, int64_t kc, int64_t nc, int64_t p_lo, int64_t p_hi,
            float* __restrict dst) {
  const int64_t ps = b_panel_stride(kc);
  if (!g.trans_b && p_hi > p_lo) {
    // B stored K x N: walk each source row once, across all the panels (full
    // panels first, then the zero-padded last one)
    const int64_t p_full = std::min(p_hi, nc / NR);
    const int64_t pf_lo = p_lo * NR, pf_hi = std::min(nc, p_hi * NR);
    for (int64_t k = 0; k < kc; ++k) {
      const float* src = g.B + (k0 + k) * g.ldb + j0;
      if (k + kPackAhead < kc) {
        // rows are short (a group's width) and far apart: the hardware
        // prefetchers would not start on them, so ask a few rows ahead
        if (pf_hi > pf_lo) prefetch_floats<3>(src + kPackAhead * g.ldb + pf_lo, pf_hi - pf_lo);
      }
      for (int64_t p = p_lo; p < p_full; ++p) {
        float* __restrict d = dst + p * ps + k * NR;
        std::memcpy(d, src + p * NR, NR * sizeof(float));  // constant size: inlined vector moves
      }
    }
    if (p_full < p_hi) {
      const int64_t jr = p_full * NR, n = nc - jr;
      float* __restrict d = dst + p_full * ps;
      const float* src = g.B + k0 * g.ldb + j0 + jr;
      for (int64_t k = 0; k < kc; ++k)
        for (int j = 0; j < NR; ++j) d[k * NR + j] = j < n ? src[k * g.ldb + j] : 0.0f;
    }
    return;
  }
  for (int64_t p = p_lo; p < p_hi; ++p) {
    const int64_t jr = p * NR;
    const int64_t n = std::min<int64_t>(NR, nc - jr);
    float* __restrict d = dst + p * ps;
    {
      // B stored N x K: op(B)(k, j) = B[j, k]; column j of the panel is row j of B
      const float* rows[NR];
      for (int j = 0; j < NR; ++j) rows[j] = g.B + (j0 + jr + std::min<int64_t>(j, n - 1)) * g.ldb + k0;
#if defined(__AVX2__)
      static_assert(NR % 8 == 0, "the transposing pack works in 8 x 8 blocks");
      if (n == NR) {
        int64_t k = 0;
        for (; k + 8 <= kc; k += 8)
          for (int jg = 0; jg < NR; jg += 8) transpose8x8(rows + jg, k, d + k * NR + jg, NR);
        for (; k < kc; ++k)
          for (int j = 0; j < NR; ++j) d[k * NR + j] = rows[j][k];
        continue;
      }
#endif
      if (n == NR) {
        for (int64_t k = 0; k < kc; ++k)
          for (int j = 0; j < NR; ++j) d[k * NR + j] = rows[j][k];
      } else {
        for (int64_t k = 0; k < kc; ++k)
          for (int j = 0; j < NR; ++j) d[k * NR + j] = j < n ? rows[j][k] : 0.0f;
      }
    }
  }
}

// Even split of [0, units) over n threads: [lo, hi) for thread t.
inline void split_range(int64_t units, int t, int n, int64_t& lo, int64_t& hi) {
  lo = units * t / n;
  hi = units * (t + 1) / n;
}


// Cache blocking: tuning::Gemm's, or FUSEDLEARN_GEMM_MC / _KC / _NC
// from the environment (read once; for tuning on other machines).
struct Blocking {
  int64_t mc, kc, nc;
};
int64_t env_or(const char* name, int64_t def, int64_t multiple) {
  const char* v = std::getenv(name);
  if (!v || !*v) return def;
  const long long x = std::atoll(v);
  if (x <= 0) return def;
  return std::max<int64_t>(multiple, (int64_t(x) + multiple - 1) / multiple * multiple);
}
const Blocking& blocking() {
  static const Blocking b{env_or("FUSEDLEARN_GEMM_MC", Tune::MC, MR), env_or("FUSEDLEARN_GEMM_KC", Tune::KC, 1),
                          env_or("FUSEDLEARN_GEMM_NC", Tune::NC, NR)};
  return b;
}

// The KC blocks of K, made equal (rounded up to 8): K = 576 runs as 3 x 192,
// not 256 + 256 + 64, whose short last block pays a whole C-tile load and
// store for a quarter of the arithmetic.
inline int64_t balanced_kc(int64_t K, int64_t kc) {
  const int64_t blocks = (K + kc - 1) / kc;
  return std::min(kc, ((K + blocks - 1) / blocks + 7) / 8 * 8);
}

// Prefetch (into L2) part `part` of `parts` of the source of op(B)[k0:k0+kc,
// j0:j0+nc]: the rows of B as stored, each a contiguous run of cache lines.
void prefetch_b_source(const GemmArgs<float>& g, int64_t k0, int64_t j0, int64_t kc, int64_t nc, int64_t part,
                       int64_t parts) {
  const int64_t rows = g.trans_b ? nc : kc, len = g.trans_b ? kc : nc;
  const float* base = g.trans_b ? g.B + j0 * g.ldb + k0 : g.B + k0 * g.ldb + j0;
  const int64_t r_lo = rows * part / parts, r_hi = rows * (part + 1) / parts;
  for (int64_t r = r_lo; r < r_hi; ++r) {
    prefetch_floats<2>(base + r * g.ldb, len);
  }
}

// Work items handed out to whichever thread asks first: when another process
// holds a core, the unimpeded thread takes more of them instead of waiting.
struct WorkCounter {
  std::atomic<int64_t> next{0};
  int64_t take() { return next.fetch_add(1, std::memory_order_relaxed); }
};

// How the small-M driver cuts op(B) (K x N): KC blocks of K, NR-column micro-panels.
// It is also the layout of a whole packed op(B) (sgemm_pack_b): KC block b holds all
// n_panels micro-panels, b_panel_stride(kc) apart, at offset(b), in space sized for
// the longest block.
struct SmallMBlocks {
  int64_t KC, kc_max, k_blocks, n_panels;
  SmallMBlocks(int64_t K, int64_t N)
      : KC(balanced_kc(K, blocking().kc)), kc_max(std::min(KC, K)), k_blocks((K + KC - 1) / KC),
        n_panels((N + NR - 1) / NR) {}
  int64_t offset(int64_t b) const { return b * n_panels * b_panel_stride(kc_max); }
};

// Only the small-M driver reads a packed op(B) (the blocked one packs per NC
// block for its own schedule), so only such calls get one.
int64_t sgemm_packed_b_size(const GemmArgs<float>& g) {
  if (g.M <= 0 || g.N <= 0 || g.K <= 0 || g.M > blocking().mc) return 0;
  const SmallMBlocks bl(g.K, g.N);
  return bl.offset(bl.k_blocks);
}

int64_t sgemm_packed_max_m() { return blocking().mc; }

void sgemm_pack_b(const GemmArgs<float>& g, float* dst) {
  if (sgemm_packed_b_size(g) == 0) return;
  const SmallMBlocks bl(g.K, g.N);
  for (int64_t b = 0; b < bl.k_blocks; ++b) {
    const int64_t pc = b * bl.KC;
    pack_b(g, pc, 0, std::min(bl.KC, g.K - pc), g.N, 0, bl.n_panels, dst + bl.offset(b));
  }
}

// M <= MC: the A rows are few, so every thread packs all of op(A) for itself
// (per KC block, once), and the threads take groups of NR micro-panels of
// op(B) (tuning::Gemm::GROUP_KIB packed: part of L2) dynamically.  A group runs all its KC
// blocks back to back, packing each B block right before use while
// prefetching the source of the next, so the packed B never makes a round trip
// through L3 (B is read from memory once; with few rows that read, not the
// arithmetic, is what needs hiding) and the threads never wait for each other.
// Packing walks each source row of B contiguously across the group (the
// hardware prefetchers follow that; one 64-byte panel column per row, rows
// kilobytes apart, they would not).
void sgemm_small_m(const GemmArgs<float>& g, EpilogueFn<float> epi, int nt) {
  const int64_t M = g.M, N = g.N, K = g.K;
  const SmallMBlocks bl(K, N);
  const int64_t KC = bl.KC, kc_max = bl.kc_max, k_blocks = bl.k_blocks, n_panels = bl.n_panels;
  const int64_t m_pad = (M + MR - 1) / MR * MR;
  const int64_t m_tiles = m_pad / MR;
  // at most GROUP_KIB (part of L2) of packed B per group, and at least two groups per thread
  static const int64_t group_floats = env_or("FUSEDLEARN_GEMM_GROUP_KIB", Tune::GROUP_KIB, 1) * 256;
  const int64_t group = std::max<int64_t>(
      1, std::min<int64_t>(group_floats / (NR * kc_max), (n_panels + 2 * nt - 1) / (2 * nt)));
  const int64_t n_groups = (n_panels + group - 1) / group;
  // all of op(A) packed (block b at b * m_pad * KC) unless that exceeds WHOLE_A_FLOATS;
  // then each group repacks its A blocks
  const bool whole_a = m_pad * K <= Tune::WHOLE_A_FLOATS;
  const bool prepacked = g.packed_b != nullptr;  // (then the packed panels stream from L3 in order)
  WorkCounter work;
  std::atomic<bool> out_of_memory{false};
  auto group_cols = [&](int64_t gi, int64_t& j0, int64_t& ncols) {
    const int64_t q0 = gi * group;
    j0 = q0 * NR;
    ncols = std::min(N, (q0 + std::min(group, n_panels - q0)) * NR) - j0;
  };
  auto body = [&](int, int) {
    float *abuf, *bbuf;
    try {
      abuf = tl_a_buf.get(size_t((whole_a ? m_pad * K : m_pad * kc_max) + kASlack));
      bbuf = prepacked ? nullptr : tl_b_buf.get(size_t(group * b_panel_stride(kc_max)));
    } catch (const std::bad_alloc&) {
      out_of_memory = true;  // no exception may leave an OpenMP region
      return;
    }
    alignas(64) float tile[MR * NR];
    if (whole_a)
      for (int64_t b = 0; b < k_blocks; ++b) pack_a(g, 0, b * KC, M, std::min(KC, K - b * KC), abuf + b * m_pad * KC);
    for (int64_t gi = work.take(); gi < n_groups; gi = work.take()) {
      int64_t j0, ncols;
      group_cols(gi, j0, ncols);
      const int64_t gp = (ncols + NR - 1) / NR;
      for (int64_t b = 0; b < k_blocks; ++b) {
        const int64_t pc = b * KC, kc = std::min(KC, K - pc);
        const bool last = b + 1 == k_blocks;
        const float beta = b == 0 ? g.beta : 1.0f;
        const float* ap = abuf + (whole_a ? b * m_pad * KC : 0);
        if (!whole_a) pack_a(g, 0, pc, M, kc, abuf);
        // this group's panels of KC block b: packed now, or found in the caller's packed op(B)
        const float* bpanels =
            prepacked ? g.packed_b + bl.offset(b) + gi * group * b_panel_stride(kc) : bbuf;
        if (!prepacked) pack_b(g, pc, j0, kc, ncols, 0, gp, bbuf);
        // what comes next: this group's next KC block, or (a guess) the next
        // group anyone will take; fetched a share per tile while this computes
        int64_t npc = pc + KC, nj0 = j0, nnc = ncols;
        bool prefetch_next = !last;
        if (last) {
          const int64_t ngi = work.next.load(std::memory_order_relaxed);
          prefetch_next = ngi < n_groups;
          if (prefetch_next) group_cols(ngi, nj0, nnc);
          npc = 0;
        }
        const int64_t nkc = std::min(KC, K - npc);
        for (int64_t q = 0; q < gp; ++q) {
          const int64_t nr = std::min<int64_t>(NR, ncols - q * NR);
          const float* bp = bpanels + q * b_panel_stride(kc);
          for (int64_t it = 0; it < m_tiles; ++it) {
            // a few dozen lines per tile: never more than the miss queues hold
            if (prefetch_next && !prepacked)
              prefetch_b_source(g, npc, nj0, nkc, nnc, q * m_tiles + it, gp * m_tiles);
            const int64_t ir = it * MR;
            run_tile(g, epi, ap + ir * kc, bp, kc, ir, j0 + q * NR, std::min<int64_t>(MR, M - ir), nr, beta, last,
                     tile);
          }
        }
      }
    }
  };
  run_team(nt, body);
  if (out_of_memory) throw std::bad_alloc();
}

// Waits (spinning: the other threads are a few microseconds away) until c >= target.
inline void wait_for(const std::atomic<int64_t>& c, int64_t target) {
  while (c.load(std::memory_order_acquire) < target) {
#if defined(__x86_64__) || defined(__i386__)
    _mm_pause();
#endif
  }
}

// M > MC: the five loops.  For each NC block of columns, op(B) is packed for
// all of K at once (capped near 8 MiB so it stays in L3) by all threads
// together, taking chunks of micro-panels dynamically; once every chunk is
// packed the threads take row blocks (MC rows, a multiple of the thread count
// of them) dynamically, and run each through all KC blocks, packing its A
// block into their own L2.  No barriers between column blocks: the packed B
// is double-buffered, and counters say when a block is packed (its rows may
// start) and when all rows of the block two back are done (its buffer may be
// overwritten), so a thread that finishes its rows packs and starts the next
// block while the others finish theirs (with a barrier per block the early
// thread idled there; bench/RESULTS.md, "Tuning notes" [gemm-blocked-barriers]).
void sgemm_blocked(const GemmArgs<float>& g, EpilogueFn<float> epi, int nt) {
  const int64_t M = g.M, N = g.N, K = g.K;
  const Blocking& bl = blocking();
  const int64_t KC = balanced_kc(K, bl.kc);
  const int64_t kc_max = std::min(KC, K);
  const int64_t k_blocks = (K + KC - 1) / KC;
  const int64_t ps_max = b_panel_stride(kc_max);
  // column blocks: at most NC, packed B for all of K at most PACKED_B_FLOATS, equal widths
  const int64_t nc_cap = std::min(bl.nc, std::max<int64_t>(1, Tune::PACKED_B_FLOATS / (k_blocks * ps_max)) * NR);
  const int64_t n_jc = (N + nc_cap - 1) / nc_cap;
  const int64_t NC = ((N + n_jc - 1) / n_jc + NR - 1) / NR * NR;
  const int64_t panels_max = (std::min(NC, N) + NR - 1) / NR;
  const int64_t b_block = panels_max * ps_max;  // packed KC block b starts at b * b_block
  const int64_t b_size = k_blocks * b_block;    // one column block's packed B
  // row blocks: a multiple of the thread count of them, at most MC rows, MR-aligned
  int64_t blocks = (M + bl.mc - 1) / bl.mc;
  blocks = (blocks + nt - 1) / nt * nt;
  const int64_t mc = std::min(bl.mc, ((M + blocks - 1) / blocks + MR - 1) / MR * MR);
  blocks = (M + mc - 1) / mc;
  constexpr int64_t kPackChunk = Tune::PACK_CHUNK;  // micro-panels per packing work item

  float* bbuf = tl_b_buf.get(size_t(std::min<int64_t>(n_jc, 2) * b_size));  // shared by the team
  struct ColumnBlock {
    WorkCounter pack_work, row_work;               // packing chunks / row blocks handed out
    std::atomic<int64_t> packed{0}, rows_done{0};  // packing chunks / row blocks finished
  };
  std::unique_ptr<ColumnBlock[]> cb(new ColumnBlock[size_t(n_jc)]);
  std::atomic<bool> out_of_memory{false};

  auto body = [&](int, int n) {
    float* abuf = nullptr;
    try {
      abuf = tl_a_buf.get(size_t(mc * kc_max + kASlack));
    } catch (const std::bad_alloc&) {
      out_of_memory = true;
    }
    if (n > 1) {
#pragma omp barrier
    }
    if (out_of_memory) return;  // seen by every thread after the barrier: all return
    alignas(64) float tile[MR * NR];
    for (int64_t jci = 0; jci < n_jc; ++jci) {
      const int64_t jc = jci * NC, nc = std::min(NC, N - jc);
      const int64_t n_panels = (nc + NR - 1) / NR;
      const int64_t chunks = (n_panels + kPackChunk - 1) / kPackChunk;
      float* bblk = bbuf + (jci % 2) * b_size;
      ColumnBlock& col = cb[size_t(jci)];
      if (jci >= 2) wait_for(cb[size_t(jci - 2)].rows_done, blocks);  // its buffer is free
      for (int64_t it = col.pack_work.take(); it < k_blocks * chunks; it = col.pack_work.take()) {
        const int64_t b = it / chunks, ch = it % chunks;
        const int64_t pc = b * KC, kc = std::min(KC, K - pc);
        pack_b(g, pc, jc, kc, nc, ch * kPackChunk, std::min(n_panels, (ch + 1) * kPackChunk), bblk + b * b_block);
        col.packed.fetch_add(1, std::memory_order_release);
      }
      wait_for(col.packed, k_blocks * chunks);
      for (int64_t blk = col.row_work.take(); blk < blocks; blk = col.row_work.take()) {
        const int64_t ic = blk * mc, rows = std::min(mc, M - ic);
        for (int64_t b = 0; b < k_blocks; ++b) {
          const int64_t pc = b * KC, kc = std::min(KC, K - pc);
          const bool last = b + 1 == k_blocks;
          const float beta = b == 0 ? g.beta : 1.0f;
          pack_a(g, ic, pc, rows, kc, abuf);
          const float* bb = bblk + b * b_block;
          for (int64_t q = 0; q < n_panels; ++q) {
            const int64_t nr = std::min<int64_t>(NR, nc - q * NR);
            const float* bp = bb + q * b_panel_stride(kc);
            for (int64_t ir = 0; ir < rows; ir += MR)
              run_tile(g, epi, abuf + ir * kc, bp, kc, ic + ir, jc + q * NR, std::min<int64_t>(MR, rows - ir), nr,
                       beta, last, tile);
          }
        }
        col.rows_done.fetch_add(1, std::memory_order_release);
      }
    }
  };

  run_team(nt, body);
  if (out_of_memory) throw std::bad_alloc();
}

void sgemm(const GemmArgs<float>& g) {
  if (g.M <= 0 || g.N <= 0) return;
  if (g.K <= 0 || g.alpha == 0.0f) {
    scale_only(g);
    return;
  }
  const EpilogueFn<float> epi = pick_epilogue(g);
  const int nt = gemm_threads(g.M, g.N, g.K);
  if (g.M <= blocking().mc)  // (the only driver that reads a packed_b: sgemm_packed_b_size)
    sgemm_small_m(g, epi, nt);
  else
    sgemm_blocked(g, epi, nt);
}

// ---- float64 reference -------------------------------------------------------------------
void dgemm(const GemmArgs<double>& g) {
  if (g.M <= 0 || g.N <= 0) return;
  if (g.K <= 0 || g.alpha == 0.0) {
    scale_only(g);
    return;
  }
  const EpilogueFn<double> epi = pick_epilogue(g);
  const int64_t M = g.M, N = g.N, K = g.K;
  const int nt = gemm_threads(M, N, K);
  std::atomic<bool> out_of_memory{false};
  auto body = [&](int t, int n) {
    int64_t lo, hi;
    split_range(M, t, n, lo, hi);
    std::vector<double> acc_buf;
    try {
      acc_buf.resize(size_t(N));
    } catch (const std::bad_alloc&) {
      out_of_memory = true;
      return;
    }
    double* acc = acc_buf.data();
    for (int64_t i = lo; i < hi; ++i) {
      std::fill(acc, acc + N, 0.0);
      for (int64_t k = 0; k < K; ++k) {
        const double a = g.trans_a ? g.A[k * g.lda + i] : g.A[i * g.lda + k];
        if (!g.trans_b) {
          const double* b = g.B + k * g.ldb;
          for (int64_t j = 0; j < N; ++j) acc[j] += a * b[j];
        } else {
          const double* b = g.B + k;
          for (int64_t j = 0; j < N; ++j) acc[j] += a * b[j * g.ldb];
        }
      }
      double* c = g.C + i * g.ldc;
      if (g.beta == 0.0) {
        for (int64_t j = 0; j < N; ++j) c[j] = g.alpha * acc[j];
      } else {
        for (int64_t j = 0; j < N; ++j) c[j] = g.alpha * acc[j] + g.beta * c[j];
      }
      if (epi) epi(g, i, 0, 1, N);
    }
  };
  run_team(nt, body);
  if (out_of_memory) throw std::bad_alloc();
}

}  // namespace

void fill_gemm_kernels(CpuKernels& k) {
  k.sgemm = &sgemm;
  k.dgemm = &dgemm;
  k.sgemm_packed_b_size = &sgemm_packed_b_size;
  k.sgemm_pack_b = &sgemm_pack_b;
  k.sgemm_packed_max_m = &sgemm_packed_max_m;
}

}  // namespace FL_ISA_NS
}  // namespace fl
