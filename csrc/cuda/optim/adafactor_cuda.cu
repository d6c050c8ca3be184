// Adafactor's step on one CUDA tensor (kernels/adafactor_args.h; equations in
// docs/math/optimizers.md, "Adafactor"), the same three passes as the CPU
// kernel (cpu/optim/adafactor_kernels.cpp) and the same double accumulators:
//   1. the row sums of g^2 (a block per row) and the column sums (a thread per
//      column, coalesced across the block), each lerped into its factor; the
//      sum of p^2 per row; the mean of each matrix's row factor;
//   2. the sum of U^2 per row;
//   3. p <- p (1 - lr wd) - alpha / max(1, RMS(U)/d) U, with U recomputed.
// Every sum is a fixed tree of per-block partials, so a step gives the same
// bits run to run.  Synchronous, on the legacy default stream.
#define FL_ISA_NS isa_cuda

#include <cuda_runtime.h>

#include <string>

#include "cuda/cuda_api.h"
#include "cuda/cuda_common.cuh"
#include "kernels/adafactor_args.h"

namespace fl {
namespace FL_ISA_NS {
namespace {

constexpr int kAfThreads = 256;
constexpr int kAfMaxBlocks = 1024;  // partials of the 1-D pass

__device__ __forceinline__ float af_sqrt(float x) { return sqrtf(x); }
__device__ __forceinline__ double af_sqrt(double x) { return sqrt(x); }
template <class T>
__device__ __forceinline__ T af_max(T a, T b) { return a < b ? b : a; }

// torch's lerp: exact at both ends (weight 0 and 1).
template <class T>
__device__ __forceinline__ T af_lerp(T a, T b, T w) {
  return w < T(0.5) ? a + w * (b - a) : b - (b - a) * (T(1) - w);
}

template <class T>
__device__ __forceinline__ T factored_u(T gs, T rr, T cc, T m, T eps1_sq) {
  return gs / af_sqrt(af_max(rr * cc / m, eps1_sq));
}

// Sum of v over the block (fixed tree); the result is valid in thread 0.
__device__ __forceinline__ double block_sum(double v, double* sh) {
  sh[threadIdx.x] = v;
  __syncthreads();
  for (int s = kAfThreads / 2; s > 0; s >>= 1) {
    if (int(threadIdx.x) < s) sh[threadIdx.x] += sh[threadIdx.x + s];
    __syncthreads();
  }
  const double r = sh[0];
  __syncthreads();
  return r;
}

// Pass 1, rows: block (b, r) over row r of matrix b.
template <class T>
__global__ void __launch_bounds__(kAfThreads) row_pass(const T* __restrict__ p, const T* __restrict__ g,
                                                       T* __restrict__ row, double* __restrict__ psq_row,
                                                       int64_t C, T w) {
  __shared__ double sh[kAfThreads];
  const int64_t br = blockIdx.x;
  const T* pr = p + br * C;
  const T* gr = g + br * C;
  double gsq = 0, psq = 0;
  for (int64_t c = threadIdx.x; c < C; c += kAfThreads) {
    gsq += double(gr[c]) * double(gr[c]);
    psq += double(pr[c]) * double(pr[c]);
  }
  gsq = block_sum(gsq, sh);
  psq = block_sum(psq, sh);
  if (threadIdx.x == 0) {
    row[br] = af_lerp(row[br], T(gsq / double(C)), w);
    psq_row[br] = psq;
  }
}

// Pass 1, columns: thread (b, c) over column c of matrix b.
template <class T>
__global__ void __launch_bounds__(kAfThreads) col_pass(const T* __restrict__ g, T* __restrict__ col, int64_t batch,
                                                       int64_t R, int64_t C, T w) {
  const int64_t bc = int64_t(blockIdx.x) * kAfThreads + threadIdx.x;
  if (bc >= batch * C) return;
  const int64_t b = bc / C, c = bc % C;
  const T* gb = g + b * R * C + c;
  double s = 0;
  for (int64_t r = 0; r < R; ++r) s += double(gb[r * C]) * double(gb[r * C]);
  col[bc] = af_lerp(col[bc], T(s / double(R)), w);
}

// max(mean of matrix b's row factor, eps1), one block per matrix.
template <class T>
__global__ void __launch_bounds__(kAfThreads) row_mean_pass(const T* __restrict__ row, double* __restrict__ mean,
                                                            int64_t R, T eps1) {
  __shared__ double sh[kAfThreads];
  const T* rb = row + int64_t(blockIdx.x) * R;
  double s = 0;
  for (int64_t r = threadIdx.x; r < R; r += kAfThreads) s += double(rb[r]);
  s = block_sum(s, sh);
  if (threadIdx.x == 0) mean[blockIdx.x] = double(af_max(T(s / double(R)), eps1));
}

// Pass 2: the sum of U^2 of row (b, r).
template <class T>
__global__ void __launch_bounds__(kAfThreads) usq_pass(const T* __restrict__ g, const T* __restrict__ row,
                                                       const T* __restrict__ col, const double* __restrict__ mean,
                                                       double* __restrict__ usq_row, int64_t R, int64_t C,
                                                       T eps1_sq) {
  __shared__ double sh[kAfThreads];
  const int64_t br = blockIdx.x, b = br / R;
  const T* gr = g + br * C;
  const T* cb = col + b * C;
  const T rr = row[br], m = T(mean[b]);
  double s = 0;
  for (int64_t c = threadIdx.x; c < C; c += kAfThreads) {
    const T u = factored_u(gr[c], rr, cb[c], m, eps1_sq);
    s += double(u) * double(u);
  }
  s = block_sum(s, sh);
  if (threadIdx.x == 0) usq_row[br] = s;
}

// The step's coefficient from the partials: coef = sign alpha / max(1, RMS(U) / d).
__global__ void __launch_bounds__(kAfThreads) coef_pass(const double* __restrict__ psq, const double* __restrict__ usq,
                                                        int64_t count, double n, double eps2, double rho, double d,
                                                        double sign, double* __restrict__ coef) {
  __shared__ double sh[kAfThreads];
  double a = 0, u = 0;
  for (int64_t i = threadIdx.x; i < count; i += kAfThreads) {
    a += psq[i];
    u += usq[i];
  }
  a = block_sum(a, sh);
  u = block_sum(u, sh);
  if (threadIdx.x == 0) {
    const double alpha = fmax(eps2, sqrt(a) / sqrt(n)) * rho;
    const double denom = fmax(1.0, sqrt(u) / (sqrt(n) * d));
    *coef = alpha / denom * sign;
  }
}

// Pass 3 of a factored tensor, row (b, r).
template <class T>
__global__ void __launch_bounds__(kAfThreads) factored_update(T* __restrict__ p, const T* __restrict__ g,
                                                              const T* __restrict__ row, const T* __restrict__ col,
                                                              const double* __restrict__ mean,
                                                              const double* __restrict__ coef, int64_t R, int64_t C,
                                                              T eps1_sq, T scale) {
  const int64_t br = blockIdx.x, b = br / R;
  T* pr = p + br * C;
  const T* gr = g + br * C;
  const T* cb = col + b * C;
  const T rr = row[br], m = T(mean[b]), k = T(*coef);
  for (int64_t c = threadIdx.x; c < C; c += kAfThreads)
    pr[c] = pr[c] * scale - k * factored_u(gr[c], rr, cb[c], m, eps1_sq);
}

// Passes 1 and 2 of a 1-D tensor: the variance lerp, sum p^2 and sum U^2 per block.
template <class T>
__global__ void __launch_bounds__(kAfThreads) vector_pass(const T* __restrict__ p, const T* __restrict__ g,
                                                          T* __restrict__ v, double* __restrict__ psq,
                                                          double* __restrict__ usq, int64_t n, T w, T eps1_sq) {
  __shared__ double sh[kAfThreads];
  double a = 0, u = 0;
  for (int64_t i = int64_t(blockIdx.x) * kAfThreads + threadIdx.x; i < n; i += int64_t(gridDim.x) * kAfThreads) {
    const T gi = g[i];
    a += double(p[i]) * double(p[i]);
    const T vi = af_lerp(v[i], gi * gi, w);
    v[i] = vi;
    const T ui = gi / af_sqrt(af_max(vi, eps1_sq));
    u += double(ui) * double(ui);
  }
  a = block_sum(a, sh);
  u = block_sum(u, sh);
  if (threadIdx.x == 0) {
    psq[blockIdx.x] = a;
    usq[blockIdx.x] = u;
  }
}

template <class T>
__global__ void __launch_bounds__(kAfThreads) vector_update(T* __restrict__ p, const T* __restrict__ g,
                                                            const T* __restrict__ v, const double* __restrict__ coef,
                                                            int64_t n, T eps1_sq, T scale) {
  const T k = T(*coef);
  for (int64_t i = int64_t(blockIdx.x) * kAfThreads + threadIdx.x; i < n; i += int64_t(gridDim.x) * kAfThreads)
    p[i] = p[i] * scale - k * (g[i] / af_sqrt(af_max(v[i], eps1_sq)));
}

// Device scratch of one call, freed on every way out.
struct Scratch {
  double* p = nullptr;
  const char* name;
  Scratch(size_t count, const char* op) : name(op) {
    FL_CUDA_CHECK(name, cudaMalloc(reinterpret_cast<void**>(&p), sizeof(double) * count));
  }
  ~Scratch() {
    if (p) cudaFree(p);
  }
};

void check_launch(const char* name) { FL_CUDA_CHECK(name, cudaGetLastError()); }

template <class T>
void adafactor_cuda(const AdafactorArgs& a, const char* name) {
  T* p = static_cast<T*>(a.param);
  const T* g = static_cast<const T*>(a.grad);
  const T w = T(a.beta2_weight), eps1 = T(a.eps1), eps1_sq = T(a.eps1 * a.eps1), scale = T(a.param_scale);
  const double sign = a.maximize ? -1.0 : 1.0;
  const int64_t n = a.n;
  if (a.factored) {
    const int64_t rows = a.batch * a.rows;
    if (rows > int64_t(0x7fffffff)) throw ValueError(std::string(name) + ": too many rows for one launch");
    // psq per row, usq per row, the row means, the coefficient
    Scratch s(size_t(2 * rows + a.batch + 1), name);
    double *psq = s.p, *usq = s.p + rows, *mean = s.p + 2 * rows, *coef = s.p + 2 * rows + a.batch;
    T* row = static_cast<T*>(a.row_var);
    T* col = static_cast<T*>(a.col_var);
    row_pass<T><<<unsigned(rows), kAfThreads>>>(p, g, row, psq, a.cols, w);
    check_launch(name);
    const int64_t ncols = a.batch * a.cols;
    col_pass<T><<<unsigned((ncols + kAfThreads - 1) / kAfThreads), kAfThreads>>>(g, col, a.batch, a.rows, a.cols, w);
    check_launch(name);
    row_mean_pass<T><<<unsigned(a.batch), kAfThreads>>>(row, mean, a.rows, eps1);
    check_launch(name);
    usq_pass<T><<<unsigned(rows), kAfThreads>>>(g, row, col, mean, usq, a.rows, a.cols, eps1_sq);
    check_launch(name);
    coef_pass<<<1, kAfThreads>>>(psq, usq, rows, double(n), a.eps2, a.rho, a.d, sign, coef);
    check_launch(name);
    factored_update<T><<<unsigned(rows), kAfThreads>>>(p, g, row, col, mean, coef, a.rows, a.cols, eps1_sq, scale);
    check_launch(name);
    FL_CUDA_CHECK(name, cudaStreamSynchronize(cudaStreamLegacy));
  } else {
    const int64_t want = (n + kAfThreads - 1) / kAfThreads;
    const int blocks = int(want < kAfMaxBlocks ? want : kAfMaxBlocks);
    Scratch s(size_t(2 * blocks + 1), name);
    double *psq = s.p, *usq = s.p + blocks, *coef = s.p + 2 * blocks;
    T* v = static_cast<T*>(a.variance);
    vector_pass<T><<<blocks, kAfThreads>>>(p, g, v, psq, usq, n, w, eps1_sq);
    check_launch(name);
    coef_pass<<<1, kAfThreads>>>(psq, usq, blocks, double(n), a.eps2, a.rho, a.d, sign, coef);
    check_launch(name);
    vector_update<T><<<blocks, kAfThreads>>>(p, g, v, coef, n, eps1_sq, scale);
    check_launch(name);
    FL_CUDA_CHECK(name, cudaStreamSynchronize(cudaStreamLegacy));
  }
}

}  // namespace
}  // namespace FL_ISA_NS

namespace cuda {

void adafactor_step(const AdafactorArgs& args, DType dtype, int device) {
  using namespace FL_ISA_NS;
  const char* name = "adafactor_ (CUDA)";
  if (args.n == 0) return;
  DeviceGuard guard(device, name);
  if (dtype == DType::f32)
    adafactor_cuda<float>(args, name);
  else if (dtype == DType::f64)
    adafactor_cuda<double>(args, name);
  else
    throw ValueError(std::string(name) + ": float32 or float64 arrays only");
}

}  // namespace cuda
}  // namespace fl
