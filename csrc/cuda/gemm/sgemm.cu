// GEMM on CUDA with the fused epilogue of kernels/gemm_args.h:
//   C = act(alpha * op(A) @ op(B) + beta * C + bias)      (row-major)
//
// float:  a tiled SGEMM on plain FP32 FMA (no TF32): 128x128 block tile,
//         BK = 8, 256 threads, an 8x8 register micro-tile per thread,
//         double-buffered shared memory with a register prefetch of the next
//         k-slice, 16-byte global loads where the layout allows them.
// double: a plain 64x64 shared-memory tiled kernel (the reference path).
//
// Each kernel is written as a few per-thread phases (load, store to shared,
// compute, epilogue) that take the thread index as an argument and never read
// threadIdx themselves; the __global__ functions only sequence them between
// __syncthreads().  tools/gemm_host_emulation.cpp runs the same phases for
// every thread of every block on the CPU to check the indexing.
#define FL_ISA_NS isa_cuda

#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>
#include <string>

#include "kernels/gemm_args.h"
#include "cuda/cuda_api.h"
#include "cuda/cuda_common.cuh"

namespace fl {
namespace FL_ISA_NS {
namespace gemm {

#define FL_HD __host__ __device__ __forceinline__

// ---- the epilogue, shared by both kernels ------------------------------------------------
template <class T>
FL_HD T activate(Activation act, T x) {
  switch (act) {
    case Activation::relu:
      return x < T(0) ? T(0) : x;  // NaN passes through, as in torch
    case Activation::tanh:
      if constexpr (sizeof(T) == 4) return tanhf(x); else return tanh(x);
    case Activation::sigmoid:
      if constexpr (sizeof(T) == 4) return 1.0f / (1.0f + expf(-x)); else return 1.0 / (1.0 + exp(-x));
    default:
      return x;
  }
}

// alpha * acc + beta * c_old + bias, where c_old is read only when beta != 0.
template <class T>
FL_HD T preactivation(const GemmArgs<T>& g, T acc, const T* c, int64_t m, int64_t n) {
  T v = g.alpha * acc;
  if (g.beta != T(0)) v += g.beta * *c;
  if (g.bias_axis == BiasAxis::per_col) v += g.bias[n];
  else if (g.bias_axis == BiasAxis::per_row) v += g.bias[m];
  return v;
}

// One element of the output: the single store of C (and of preact).
template <class T>
FL_HD void finish(const GemmArgs<T>& g, T acc, int64_t m, int64_t n) {
  T* c = g.C + m * g.ldc + n;
  const T v = preactivation(g, acc, c, m, n);
  if (g.preact) g.preact[m * g.ld_preact + n] = v;
  *c = activate(g.act, v);
}

// ---- SGEMM ---------------------------------------------------------------------------------
constexpr int kBM = 128, kBN = 128, kBK = 8;  // block tile
constexpr int kTM = 8, kTN = 8;               // register micro-tile per thread
constexpr int kSThreads = 256;                // (kBM / kTM) * (kBN / kTN)
constexpr int kPad = 4;                       // keeps the transposing stores conflict-free and rows 16-byte aligned
static_assert((kBM / kTM) * (kBN / kTN) == kSThreads, "one micro-tile per thread");
static_assert(kBM * kBK == 4 * kSThreads && kBN * kBK == 4 * kSThreads, "each thread loads 4 of A and 4 of B per slice");

// The k-slices of A (stored k-major: a[k][m]) and B (b[k][n]), twice.
struct SgemmSmem {
  alignas(16) float a[2][kBK][kBM + kPad];
  alignas(16) float b[2][kBK][kBN + kPad];
};

// What one thread keeps in registers.
struct SgemmThread {
  float acc[kTM][kTN];
  float pa[4], pb[4];  // the next k-slice's share of A and B, on its way to shared memory
};

// At most 128 registers, so that two blocks (16 warps) fit on an SM.
constexpr int kSMinBlocks = 2;

// Which layouts may use 16-byte loads / stores (decided once per call on the host).
struct SgemmPlan {
  bool va, vb, vc;
};

FL_HD bool ld_aligned16(const void* p, int64_t ld) { return aligned16(p) && (ld & 3) == 0; }

inline SgemmPlan sgemm_plan(const GemmArgs<float>& g) {
  SgemmPlan p;
  p.va = ld_aligned16(g.A, g.lda);
  p.vb = ld_aligned16(g.B, g.ldb);
  p.vc = ld_aligned16(g.C, g.ldc) && (!g.preact || ld_aligned16(g.preact, g.ld_preact));
  return p;
}

// Four consecutive elements of a row-major `rows x cols` matrix (leading
// dimension ld) at stored row r, columns c .. c+3; zero where out of range.
// V: base and ld allow a 16-byte load at every column multiple of 4 (c is one).
template <bool V>
FL_HD void load_run(float (&v)[4], const float* base, int64_t ld, int64_t r, int64_t c, int64_t rows,
                    int64_t cols) {
  if (r < rows) {
    const float* p = base + r * ld + c;
    if (V && c + 4 <= cols) {
      const float4 x = *reinterpret_cast<const float4*>(p);
      v[0] = x.x; v[1] = x.y; v[2] = x.z; v[3] = x.w;
      return;
    }
FL_UNROLL
    for (int j = 0; j < 4; ++j) v[j] = c + j < cols ? p[j] : 0.0f;
  } else {
FL_UNROLL
    for (int j = 0; j < 4; ++j) v[j] = 0.0f;
  }
}

// Load coordinates of a thread inside a 128 x 8 (m or n by k) slice.  When the
// stored matrix runs along k (A plain, B transposed) a thread takes 4 k of one
// m (two threads per m); when it runs along m / n (A transposed, B plain) it
// takes 4 m of one k (32 threads per k row).  Either way a warp reads whole
// 32-byte sectors and the shared store below is conflict-free.
struct LoadPos {
  int mn, k;
};
template <bool AlongK>
FL_HD LoadPos load_pos(int tid) {
  if (AlongK) return LoadPos{tid >> 1, (tid & 1) * 4};
  return LoadPos{(tid & 31) * 4, tid >> 5};
}

// The thread's place in the 16 x 16 grid of micro-tiles.  A warp covers 4 x 8
// of them, so its shared reads per k are 4 (A) and 8 (B) distinct float4s.
// Rows of the micro-tile: ty*4 + {0..3} and 64 + ty*4 + {0..3}; columns alike.
FL_HD int micro_tx(int tid) { return ((tid >> 5) & 1) * 8 + (tid & 7); }
FL_HD int micro_ty(int tid) { return (tid >> 6) * 4 + ((tid & 31) >> 3); }
FL_HD int micro_row(int ty, int i) { return (i >> 2) * (kBM / 2) + ty * 4 + (i & 3); }
FL_HD int micro_col(int tx, int j) { return (j >> 2) * (kBN / 2) + tx * 4 + (j & 3); }

template <bool TA, bool TB, bool VA, bool VB>
struct Sgemm {
  static FL_HD void zero(SgemmThread& th) {
FL_UNROLL
    for (int i = 0; i < kTM; ++i)
FL_UNROLL
      for (int j = 0; j < kTN; ++j) th.acc[i][j] = 0.0f;
  }

  // Global -> registers: this thread's 4 elements of A and of B for the slice at k0.
  static FL_HD void load(SgemmThread& th, const GemmArgs<float>& g, int tid, int64_t m0, int64_t n0, int64_t k0) {
    const LoadPos a = load_pos<!TA>(tid);
    if (!TA)  // A stored M x K
      load_run<VA>(th.pa, g.A, g.lda, m0 + a.mn, k0 + a.k, g.M, g.K);
    else      // A stored K x M
      load_run<VA>(th.pa, g.A, g.lda, k0 + a.k, m0 + a.mn, g.K, g.M);
    const LoadPos b = load_pos<TB>(tid);
    if (TB)   // B stored N x K
      load_run<VB>(th.pb, g.B, g.ldb, n0 + b.mn, k0 + b.k, g.N, g.K);
    else      // B stored K x N
      load_run<VB>(th.pb, g.B, g.ldb, k0 + b.k, n0 + b.mn, g.K, g.N);
  }

  // Registers -> shared buffer `buf`, transposing to k-major where needed.
  static FL_HD void store(const SgemmThread& th, SgemmSmem& s, int buf, int tid) {
    const LoadPos a = load_pos<!TA>(tid);
    if (!TA) {
FL_UNROLL
      for (int j = 0; j < 4; ++j) s.a[buf][a.k + j][a.mn] = th.pa[j];
    } else {
      *reinterpret_cast<float4*>(&s.a[buf][a.k][a.mn]) = make_float4(th.pa[0], th.pa[1], th.pa[2], th.pa[3]);
    }
    const LoadPos b = load_pos<TB>(tid);
    if (TB) {
FL_UNROLL
      for (int j = 0; j < 4; ++j) s.b[buf][b.k + j][b.mn] = th.pb[j];
    } else {
      *reinterpret_cast<float4*>(&s.b[buf][b.k][b.mn]) = make_float4(th.pb[0], th.pb[1], th.pb[2], th.pb[3]);
    }
  }

  // acc += the slice in shared buffer `buf` (8 rank-1 updates of the micro-tile).
  static FL_HD void compute(SgemmThread& th, const SgemmSmem& s, int buf, int tid) {
    const int tx = micro_tx(tid), ty = micro_ty(tid);
FL_UNROLL
    for (int k = 0; k < kBK; ++k) {
      const float4 a0 = *reinterpret_cast<const float4*>(&s.a[buf][k][ty * 4]);
      const float4 a1 = *reinterpret_cast<const float4*>(&s.a[buf][k][kBM / 2 + ty * 4]);
      const float4 b0 = *reinterpret_cast<const float4*>(&s.b[buf][k][tx * 4]);
      const float4 b1 = *reinterpret_cast<const float4*>(&s.b[buf][k][kBN / 2 + tx * 4]);
      const float ar[kTM] = {a0.x, a0.y, a0.z, a0.w, a1.x, a1.y, a1.z, a1.w};
      const float br[kTN] = {b0.x, b0.y, b0.z, b0.w, b1.x, b1.y, b1.z, b1.w};
FL_UNROLL
      for (int i = 0; i < kTM; ++i)
FL_UNROLL
        for (int j = 0; j < kTN; ++j) th.acc[i][j] = fmaf(ar[i], br[j], th.acc[i][j]);
    }
  }

  // The fused epilogue and the single store of the micro-tile.  vc: C (and
  // preact) allow 16-byte accesses at column multiples of 4.
  static FL_HD void epilogue(const SgemmThread& th, const GemmArgs<float>& g, int tid, int64_t m0, int64_t n0,
                             bool vc) {
    const int tx = micro_tx(tid), ty = micro_ty(tid);
FL_UNROLL
    for (int i = 0; i < kTM; ++i) {
      const int64_t m = m0 + micro_row(ty, i);
      if (m >= g.M) continue;
FL_UNROLL
      for (int h = 0; h < kTN / 4; ++h) {
        const int64_t n = n0 + micro_col(tx, 4 * h);
        if (vc && n + 4 <= g.N) {
          float* c = g.C + m * g.ldc + n;
          float old[4] = {0.0f, 0.0f, 0.0f, 0.0f};
          if (g.beta != 0.0f) {
            const float4 x = *reinterpret_cast<const float4*>(c);
            old[0] = x.x; old[1] = x.y; old[2] = x.z; old[3] = x.w;
          }
          float v[4];
FL_UNROLL
          for (int j = 0; j < 4; ++j) v[j] = preactivation(g, th.acc[i][4 * h + j], &old[j], m, n + j);
          if (g.preact)
            *reinterpret_cast<float4*>(g.preact + m * g.ld_preact + n) = make_float4(v[0], v[1], v[2], v[3]);
FL_UNROLL
          for (int j = 0; j < 4; ++j) v[j] = activate(g.act, v[j]);
          *reinterpret_cast<float4*>(c) = make_float4(v[0], v[1], v[2], v[3]);
        } else {
FL_UNROLL
          for (int j = 0; j < 4; ++j)
            if (n + j < g.N) finish(g, th.acc[i][4 * h + j], m, n + j);
        }
      }
    }
  }
};

template <bool TA, bool TB, bool VA, bool VB>
__global__ void __launch_bounds__(kSThreads, kSMinBlocks)
    sgemm_kernel(const __grid_constant__ GemmArgs<float> g, bool vc) {
  using K = Sgemm<TA, TB, VA, VB>;
  __shared__ SgemmSmem s;
  const int tid = int(threadIdx.x);
  const int64_t m0 = int64_t(blockIdx.y) * kBM, n0 = int64_t(blockIdx.x) * kBN;
  SgemmThread th;
  K::zero(th);
  const int64_t nk = (g.K + kBK - 1) / kBK;
  if (nk > 0) {
    K::load(th, g, tid, m0, n0, 0);
    K::store(th, s, 0, tid);
    __syncthreads();
    for (int64_t kt = 0; kt < nk; ++kt) {
      const int buf = int(kt & 1);
      const bool more = kt + 1 < nk;
      if (more) K::load(th, g, tid, m0, n0, (kt + 1) * kBK);  // in flight during the FMAs
      K::compute(th, s, buf, tid);
      // buf^1 was last read before the previous barrier: safe to overwrite
      if (more) K::store(th, s, buf ^ 1, tid);
      __syncthreads();
    }
  }
  K::epilogue(th, g, tid, m0, n0, vc);
}

// ---- DGEMM (reference path) ------------------------------------------------------------------
constexpr int kDM = 64, kDN = 64, kDK = 16, kDThreads = 256;  // 16 x 16 threads, 4 x 4 outputs each

struct DgemmSmem {
  double a[kDK][kDM + 1];
  double b[kDK][kDN + 1];
};
struct DgemmThread {
  double acc[4][4];
  double pa[4], pb[4];
};

// Element r (0..3) of a thread's share of a slice: (mn, k) with the stored
// matrix's contiguous index running fastest across threads.
FL_HD void dgemm_pos(int tid, int r, bool along_k, int& mn, int& k) {
  const int e = tid + kDThreads * r;
  if (along_k) { k = e % kDK; mn = e / kDK; }
  else { mn = e % kDM; k = e / kDM; }
}

template <bool TA, bool TB>
struct Dgemm {
  static FL_HD void zero(DgemmThread& th) {
FL_UNROLL
    for (int i = 0; i < 4; ++i)
FL_UNROLL
      for (int j = 0; j < 4; ++j) th.acc[i][j] = 0.0;
  }
  static FL_HD void load(DgemmThread& th, const GemmArgs<double>& g, int tid, int64_t m0, int64_t n0, int64_t k0) {
FL_UNROLL
    for (int r = 0; r < 4; ++r) {
      int mn, k;
      dgemm_pos(tid, r, !TA, mn, k);
      const int64_t m = m0 + mn, kk = k0 + k;
      th.pa[r] = (m < g.M && kk < g.K) ? (TA ? g.A[kk * g.lda + m] : g.A[m * g.lda + kk]) : 0.0;
      dgemm_pos(tid, r, TB, mn, k);
      const int64_t n = n0 + mn, kb = k0 + k;
      th.pb[r] = (n < g.N && kb < g.K) ? (TB ? g.B[n * g.ldb + kb] : g.B[kb * g.ldb + n]) : 0.0;
    }
  }
  static FL_HD void store(const DgemmThread& th, DgemmSmem& s, int tid) {
FL_UNROLL
    for (int r = 0; r < 4; ++r) {
      int mn, k;
      dgemm_pos(tid, r, !TA, mn, k);
      s.a[k][mn] = th.pa[r];
      dgemm_pos(tid, r, TB, mn, k);
      s.b[k][mn] = th.pb[r];
    }
  }
  static FL_HD void compute(DgemmThread& th, const DgemmSmem& s, int tid) {
    const int tx = tid % 16, ty = tid / 16;
FL_UNROLL
    for (int k = 0; k < kDK; ++k)
FL_UNROLL
      for (int i = 0; i < 4; ++i)
FL_UNROLL
        for (int j = 0; j < 4; ++j) th.acc[i][j] = fma(s.a[k][ty + 16 * i], s.b[k][tx + 16 * j], th.acc[i][j]);
  }
  static FL_HD void epilogue(const DgemmThread& th, const GemmArgs<double>& g, int tid, int64_t m0, int64_t n0) {
    const int tx = tid % 16, ty = tid / 16;
FL_UNROLL
    for (int i = 0; i < 4; ++i)
FL_UNROLL
      for (int j = 0; j < 4; ++j) {
        const int64_t m = m0 + ty + 16 * i, n = n0 + tx + 16 * j;
        if (m < g.M && n < g.N) finish(g, th.acc[i][j], m, n);
      }
  }
};

template <bool TA, bool TB>
__global__ void __launch_bounds__(kDThreads) dgemm_kernel(const __grid_constant__ GemmArgs<double> g) {
  using K = Dgemm<TA, TB>;
  __shared__ DgemmSmem s;
  const int tid = int(threadIdx.x);
  const int64_t m0 = int64_t(blockIdx.y) * kDM, n0 = int64_t(blockIdx.x) * kDN;
  DgemmThread th;
  K::zero(th);
  for (int64_t k0 = 0; k0 < g.K; k0 += kDK) {
    K::load(th, g, tid, m0, n0, k0);
    K::store(th, s, tid);
    __syncthreads();
    K::compute(th, s, tid);
    __syncthreads();
  }
  K::epilogue(th, g, tid, m0, n0);
}

// ---- host side ---------------------------------------------------------------------------------
// Checks what the kernels rely on (the bindings check shapes and buffers
// first; this guards the C++ entry points) and normalises the empty cases:
// returns false when there is nothing to do.  K == 0 or alpha == 0 make the
// product term vanish without reading A or B (BLAS convention).
template <class T>
bool prepare(GemmArgs<T>& g, const char* op) {
  const std::string o(op);
  if (g.M < 0 || g.N < 0 || g.K < 0) throw ValueError(o + ": negative matrix size");
  if (g.M == 0 || g.N == 0) return false;
  if (g.K == 0 || g.alpha == T(0)) {
    g.K = 0;
    g.alpha = T(0);
  }
  auto need = [&](bool ok, const char* what) {
    if (!ok) throw ValueError(o + ": " + what);
  };
  if (g.K > 0) {
    need(g.A && g.B, "null A or B");
    need(g.lda >= (g.trans_a ? g.M : g.K), "lda smaller than a stored row of A");
    need(g.ldb >= (g.trans_b ? g.K : g.N), "ldb smaller than a stored row of B");
  }
  need(g.C != nullptr, "null C");
  need(g.ldc >= g.N, "ldc smaller than N");
  need(g.bias_axis == BiasAxis::none || g.bias, "null bias");
  need(!g.preact || g.ld_preact >= g.N, "ld_preact smaller than N");
  return true;
}

template <int Tile, class T>
dim3 grid_for(const GemmArgs<T>& g, const char* op) {
  const int64_t gx = (g.N + Tile - 1) / Tile, gy = (g.M + Tile - 1) / Tile;
  if (gx > 0x7fffffffLL || gy > 65535) throw ValueError(std::string(op) + ": matrix too large for one launch");
  return dim3(unsigned(gx), unsigned(gy));
}

template <bool TA, bool TB, bool VA, bool VB>
void launch_sgemm(const GemmArgs<float>& g, bool vc, dim3 grid, const char* op) {
  sgemm_kernel<TA, TB, VA, VB><<<grid, kSThreads, 0, cudaStreamLegacy>>>(g, vc);
  FL_CUDA_CHECK(op, cudaGetLastError());
}
template <bool TA, bool TB>
void launch_sgemm_v(const GemmArgs<float>& g, const SgemmPlan& p, dim3 grid, const char* op) {
  if (p.va) {
    if (p.vb) launch_sgemm<TA, TB, true, true>(g, p.vc, grid, op);
    else launch_sgemm<TA, TB, true, false>(g, p.vc, grid, op);
  } else {
    if (p.vb) launch_sgemm<TA, TB, false, true>(g, p.vc, grid, op);
    else launch_sgemm<TA, TB, false, false>(g, p.vc, grid, op);
  }
}

template <bool TA, bool TB>
void launch_dgemm(const GemmArgs<double>& g, dim3 grid, const char* op) {
  dgemm_kernel<TA, TB><<<grid, kDThreads, 0, cudaStreamLegacy>>>(g);
  FL_CUDA_CHECK(op, cudaGetLastError());
}

#undef FL_HD

}  // namespace gemm
}  // namespace FL_ISA_NS

namespace cuda {

// Both entry points launch on the legacy default stream of `device` (as the
// other kernels of this build, DLPack's stream=None) and, as cuda_api.h
// promises, wait for the result before returning.
void gemm_f32(const GemmArgs<float>& args, int device) {
  using namespace FL_ISA_NS;
  using namespace FL_ISA_NS::gemm;
  const char* op = "gemm (CUDA, float32)";
  GemmArgs<float> g = args;
  if (!prepare(g, op)) return;
  const dim3 grid = grid_for<kBM>(g, op);
  static_assert(kBM == kBN, "one tile size for both grid axes");
  DeviceGuard guard(device, op);
  const SgemmPlan p = sgemm_plan(g);
  if (!g.trans_a && !g.trans_b) launch_sgemm_v<false, false>(g, p, grid, op);
  else if (!g.trans_a && g.trans_b) launch_sgemm_v<false, true>(g, p, grid, op);
  else if (g.trans_a && !g.trans_b) launch_sgemm_v<true, false>(g, p, grid, op);
  else launch_sgemm_v<true, true>(g, p, grid, op);
  FL_CUDA_CHECK(op, cudaStreamSynchronize(cudaStreamLegacy));
}

void gemm_f64(const GemmArgs<double>& args, int device) {
  using namespace FL_ISA_NS;
  using namespace FL_ISA_NS::gemm;
  const char* op = "gemm (CUDA, float64)";
  GemmArgs<double> g = args;
  if (!prepare(g, op)) return;
  const dim3 grid = grid_for<kDM>(g, op);
  static_assert(kDM == kDN, "one tile size for both grid axes");
  DeviceGuard guard(device, op);
  if (!g.trans_a && !g.trans_b) launch_dgemm<false, false>(g, grid, op);
  else if (!g.trans_a && g.trans_b) launch_dgemm<false, true>(g, grid, op);
  else if (g.trans_a && !g.trans_b) launch_dgemm<true, false>(g, grid, op);
  else launch_dgemm<true, true>(g, grid, op);
  FL_CUDA_CHECK(op, cudaStreamSynchronize(cudaStreamLegacy));
}

}  // namespace cuda
}  // namespace fl
