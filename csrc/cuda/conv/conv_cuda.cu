// CUDA convolution, pooling and batch norm, float32 (see kernels/conv_args.h).
// Deliberately simple (compiled here, not yet run on a GPU):
//  * conv2d: per image and group, an im2col kernel fills a column buffer
//    [Cg*R*S, OH*OW] and the CUDA SGEMM (cuda/gemm) multiplies it, with bias
//    and activation in its epilogue.  Backward: g = dy * act'(y); db by a
//    per-channel block reduction; dw += g @ col^T (SGEMM, beta = 1); dcol =
//    w^T @ g and a gather-style col2im (one thread per input pixel, no atomics).
//  * max pooling keeps no indices: the backward recomputes each window's
//    argmax with the CPU's tie rule and adds with atomicAdd; average pooling
//    likewise.  Batch norm: one block per channel (two-pass statistics).
// Buffers: one cudaMalloc per call for the columns (freed before returning).
#define FL_ISA_NS isa_cuda

#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>

#include "kernels/conv_args.h"
#include "cuda/cuda_api.h"
#include "cuda/cuda_common.cuh"

namespace fl {
namespace FL_ISA_NS {
namespace convk {

constexpr int kT = 256;

inline unsigned blocks_for(int64_t n) { return unsigned((n + kT - 1) / kT); }

__global__ void im2col_kernel(ConvShape p, const float* __restrict__ xg, float* __restrict__ col) {
  const int64_t OHW = p.OH * p.OW, total = p.Cg() * p.R * p.S * OHW;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t o = i % OHW, row = i / OHW;
    const int64_t s = row % p.S, r = (row / p.S) % p.R, c = row / (p.R * p.S);
    const int64_t oh = o / p.OW, ow = o % p.OW;
    const int64_t ih = oh * p.stride_h - p.pad_h + r * p.dil_h, iw = ow * p.stride_w - p.pad_w + s * p.dil_w;
    col[i] = (ih >= 0 && ih < p.H && iw >= 0 && iw < p.W) ? xg[(c * p.H + ih) * p.W + iw] : 0.0f;
  }
}

// dx[c, ih, iw] = sum of the column entries that read it (overwrites dx).
__global__ void col2im_kernel(ConvShape p, const float* __restrict__ col, float* __restrict__ dxg) {
  const int64_t HW = p.H * p.W, total = p.Cg() * HW, OHW = p.OH * p.OW;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t c = i / HW, ih = (i % HW) / p.W, iw = i % p.W;
    float acc = 0.0f;
    for (int64_t r = 0; r < p.R; ++r) {
      const int64_t hn = ih + p.pad_h - r * p.dil_h;
      if (hn < 0 || hn % p.stride_h) continue;
      const int64_t oh = hn / p.stride_h;
      if (oh >= p.OH) continue;
      for (int64_t s = 0; s < p.S; ++s) {
        const int64_t wn = iw + p.pad_w - s * p.dil_w;
        if (wn < 0 || wn % p.stride_w) continue;
        const int64_t ow = wn / p.stride_w;
        if (ow >= p.OW) continue;
        acc += col[((c * p.R + r) * p.S + s) * OHW + oh * p.OW + ow];
      }
    }
    dxg[i] = acc;
  }
}

__global__ void act_grad_kernel(Activation a, const float* __restrict__ dy, const float* __restrict__ y,
                                float* __restrict__ g, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const float d = dy[i], v = y[i];
    g[i] = a == Activation::relu ? (v > 0.0f ? d : 0.0f)
         : a == Activation::tanh ? d * (1.0f - v * v)
         : a == Activation::sigmoid ? d * v * (1.0f - v) : d;
  }
}

// Block sum of v (all threads get the result).
__device__ float block_sum(float v) {
  __shared__ float sh[kT / 32];
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  __syncthreads();
  if (lane == 0) sh[warp] = v;
  __syncthreads();
  float t = 0.0f;
  for (int w = 0; w < kT / 32; ++w) t += sh[w];
  return t;
}

// db[k] (+)= sum_{n, o} g[n, k, o]; one block per channel.
__global__ void bias_grad_kernel(const float* __restrict__ g, float* __restrict__ db, int64_t N, int64_t K,
                                 int64_t OHW, bool accumulate) {
  const int64_t k = blockIdx.x;
  float s = 0.0f;
  for (int64_t n = 0; n < N; ++n)
    for (int64_t o = threadIdx.x; o < OHW; o += blockDim.x) s += g[(n * K + k) * OHW + o];
  s = block_sum(s);
  if (threadIdx.x == 0) db[k] = (accumulate ? db[k] : 0.0f) + s;
}

// A device buffer freed at scope exit.
struct DevBuf {
  float* p = nullptr;
  DevBuf(size_t n, const char* op) {
    if (n) FL_CUDA_CHECK(op, cudaMalloc(&p, n * sizeof(float)));
  }
  ~DevBuf() {
    if (p) cudaFree(p);
  }
};

bool pointwise(const ConvShape& p) {
  return p.R == 1 && p.S == 1 && p.stride_h == 1 && p.stride_w == 1 && p.pad_h == 0 && p.pad_w == 0;
}

// ---- pooling ----------------------------------------------------------------------------
__device__ void max_window(const PoolShape& p, const float* x, int64_t oh, int64_t ow, float& best, int64_t& bi) {
  best = -INFINITY;
  bi = -1;
  for (int64_t r = 0; r < p.kh; ++r) {
    const int64_t h = oh * p.stride_h - p.pad_h + r * p.dil_h;
    if (h < 0 || h >= p.H) continue;
    for (int64_t s = 0; s < p.kw; ++s) {
      const int64_t w = ow * p.stride_w - p.pad_w + s * p.dil_w;
      if (w < 0 || w >= p.W) continue;
      const float v = x[h * p.W + w];
      if (bi < 0) bi = h * p.W + w;
      if (v > best || isnan(v)) {
        best = v;
        bi = h * p.W + w;
      }
    }
  }
}

__global__ void max_pool_fwd(PoolShape p, const float* __restrict__ x, float* __restrict__ y) {
  const int64_t OHW = p.OH * p.OW, total = p.planes * OHW;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t pl = i / OHW, o = i % OHW;
    float best;
    int64_t bi;
    max_window(p, x + pl * p.H * p.W, o / p.OW, o % p.OW, best, bi);
    y[i] = best;
  }
}

__global__ void max_pool_bwd(PoolShape p, const float* __restrict__ x, const float* __restrict__ dy,
                             float* __restrict__ dx) {
  const int64_t OHW = p.OH * p.OW, total = p.planes * OHW;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t pl = i / OHW, o = i % OHW;
    float best;
    int64_t bi;
    max_window(p, x + pl * p.H * p.W, o / p.OW, o % p.OW, best, bi);
    if (bi >= 0) atomicAdd(dx + pl * p.H * p.W + bi, dy[i]);
  }
}

__device__ void avg_window(const PoolShape& p, int64_t oh, int64_t ow, int64_t& h0, int64_t& h1, int64_t& w0,
                           int64_t& w1, int64_t& div) {
  h0 = oh * p.stride_h - p.pad_h;
  w0 = ow * p.stride_w - p.pad_w;
  h1 = min(h0 + p.kh, p.H + p.pad_h);
  w1 = min(w0 + p.kw, p.W + p.pad_w);
  const int64_t pool = (h1 - h0) * (w1 - w0);
  h0 = max(h0, int64_t(0));
  w0 = max(w0, int64_t(0));
  h1 = min(h1, p.H);
  w1 = min(w1, p.W);
  div = p.divisor_override > 0 ? p.divisor_override : p.count_include_pad ? pool : (h1 - h0) * (w1 - w0);
  if (h0 >= h1 || w0 >= w1) div = 0;
}

__global__ void avg_pool_fwd(PoolShape p, const float* __restrict__ x, float* __restrict__ y) {
  const int64_t OHW = p.OH * p.OW, total = p.planes * OHW;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t pl = i / OHW, o = i % OHW;
    int64_t h0, h1, w0, w1, div;
    avg_window(p, o / p.OW, o % p.OW, h0, h1, w0, w1, div);
    float s = 0.0f;
    for (int64_t h = h0; h < h1; ++h)
      for (int64_t w = w0; w < w1; ++w) s += x[pl * p.H * p.W + h * p.W + w];
    y[i] = div ? s / float(div) : 0.0f;
  }
}

__global__ void avg_pool_bwd(PoolShape p, const float* __restrict__ dy, float* __restrict__ dx) {
  const int64_t OHW = p.OH * p.OW, total = p.planes * OHW;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t pl = i / OHW, o = i % OHW;
    int64_t h0, h1, w0, w1, div;
    avg_window(p, o / p.OW, o % p.OW, h0, h1, w0, w1, div);
    if (!div) continue;
    const float g = dy[i] / float(div);
    for (int64_t h = h0; h < h1; ++h)
      for (int64_t w = w0; w < w1; ++w) atomicAdd(dx + pl * p.H * p.W + h * p.W + w, g);
  }
}

// ---- batch norm: one block per channel -----------------------------------------------------
__global__ void bn_fwd(BatchNormArgs<float> a) {
  const int64_t c = blockIdx.x, M = a.N * a.HW;
  float mean, invstd;
  if (a.training) {
    float s = 0.0f;
    for (int64_t i = threadIdx.x; i < M; i += blockDim.x) s += a.x[((i / a.HW) * a.C + c) * a.HW + i % a.HW];
    mean = block_sum(s) / float(M);
    float q = 0.0f;
    for (int64_t i = threadIdx.x; i < M; i += blockDim.x) {
      const float d = a.x[((i / a.HW) * a.C + c) * a.HW + i % a.HW] - mean;
      q += d * d;
    }
    q = block_sum(q);
    invstd = rsqrtf(q / float(M) + float(a.eps));
    if (threadIdx.x == 0) {
      a.save_mean[c] = mean;
      a.save_invstd[c] = invstd;
      const float m = float(a.momentum);
      if (a.running_mean) a.running_mean[c] = (1.0f - m) * a.running_mean[c] + m * mean;
      if (a.running_var && M > 1) a.running_var[c] = (1.0f - m) * a.running_var[c] + m * q / float(M - 1);
    }
  } else {
    mean = a.running_mean[c];
    invstd = rsqrtf(a.running_var[c] + float(a.eps));
  }
  const float w = a.weight ? a.weight[c] : 1.0f, b = a.bias ? a.bias[c] : 0.0f;
  const float scale = w * invstd, shift = b - mean * scale;
  for (int64_t i = threadIdx.x; i < M; i += blockDim.x) {
    const int64_t j = ((i / a.HW) * a.C + c) * a.HW + i % a.HW;
    const float v = a.x[j] * scale + shift;
    a.y[j] = a.act == Activation::relu ? fmaxf(v, 0.0f) : v;
  }
}

__global__ void bn_bwd(BatchNormArgs<float> a) {
  const int64_t c = blockIdx.x, M = a.N * a.HW;
  float mean, invstd;
  if (a.training) {
    mean = a.save_mean[c];
    invstd = a.save_invstd[c];
  } else {
    mean = a.running_mean[c];
    invstd = rsqrtf(a.running_var[c] + float(a.eps));
  }
  const bool relu = a.act == Activation::relu;
  float sg = 0.0f, sgx = 0.0f;
  for (int64_t i = threadIdx.x; i < M; i += blockDim.x) {
    const int64_t j = ((i / a.HW) * a.C + c) * a.HW + i % a.HW;
    const float g = relu && !(a.y[j] > 0.0f) ? 0.0f : a.dy[j];
    sg += g;
    sgx += g * (a.x[j] - mean);
  }
  sg = block_sum(sg);
  sgx = block_sum(sgx);
  if (threadIdx.x == 0) {
    if (a.dbias) a.dbias[c] = (a.accumulate ? a.dbias[c] : 0.0f) + sg;
    if (a.dweight) a.dweight[c] = (a.accumulate ? a.dweight[c] : 0.0f) + sgx * invstd;
  }
  if (!a.dx) return;
  const float k = (a.weight ? a.weight[c] : 1.0f) * invstd;
  const float mg = a.training ? sg / float(M) : 0.0f, mgx = a.training ? sgx * invstd * invstd / float(M) : 0.0f;
  for (int64_t i = threadIdx.x; i < M; i += blockDim.x) {
    const int64_t j = ((i / a.HW) * a.C + c) * a.HW + i % a.HW;
    const float g = relu && !(a.y[j] > 0.0f) ? 0.0f : a.dy[j];
    a.dx[j] = k * (g - mg - (a.x[j] - mean) * mgx);
  }
}

void check_launch(const char* op) { FL_CUDA_CHECK(op, cudaGetLastError()); }
void sync(const char* op) { FL_CUDA_CHECK(op, cudaStreamSynchronize(cudaStreamLegacy)); }

}  // namespace convk
}  // namespace FL_ISA_NS

namespace cuda {
using namespace FL_ISA_NS;
using namespace FL_ISA_NS::convk;

void conv2d_forward_f32(const ConvArgs<float>& a, int device) {
  const char* op = "conv2d_forward (CUDA)";
  const ConvShape& p = a.s;
  if (p.N == 0 || p.K == 0) return;
  DeviceGuard guard(device, op);
  const int64_t Cg = p.Cg(), Kg = p.Kg(), CRS = Cg * p.R * p.S, HW = p.H * p.W, OHW = p.OH * p.OW;
  const bool pw = pointwise(p);
  DevBuf col(pw ? 0 : size_t(CRS * OHW), op);
  for (int64_t n = 0; n < p.N; ++n)
    for (int64_t g = 0; g < p.groups; ++g) {
      const float* xg = a.x + (n * p.C + g * Cg) * HW;
      const float* B = xg;
      if (!pw) {
        im2col_kernel<<<blocks_for(CRS * OHW), kT>>>(p, xg, col.p);
        check_launch(op);
        B = col.p;
      }
      GemmArgs<float> ga = conv_gemm<float>(Kg, OHW, CRS, false, a.w + g * Kg * CRS, CRS, false, B, OHW,
                                 a.y + (n * p.K + g * Kg) * OHW, OHW, 0.0f);
      if (a.bias) {
        ga.bias = a.bias + g * Kg;
        ga.bias_axis = BiasAxis::per_row;
      }
      ga.act = a.act;
      gemm_f32(ga, device);  // synchronous
    }
}

void conv2d_backward_f32(const ConvArgs<float>& a, int device) {
  const char* op = "conv2d_backward (CUDA)";
  const ConvShape& p = a.s;
  DeviceGuard guard(device, op);
  const int64_t Cg = p.Cg(), Kg = p.Kg(), CRS = Cg * p.R * p.S, HW = p.H * p.W, OHW = p.OH * p.OW;
  const int64_t wsize = p.K * CRS;
  if (a.dw && !a.accumulate) FL_CUDA_CHECK(op, cudaMemset(a.dw, 0, size_t(wsize) * sizeof(float)));
  if (p.N == 0 || p.K == 0) {
    if (a.db && !a.accumulate) FL_CUDA_CHECK(op, cudaMemset(a.db, 0, size_t(p.K) * sizeof(float)));
    if (a.dx) FL_CUDA_CHECK(op, cudaMemset(a.dx, 0, size_t(p.N * p.C * HW) * sizeof(float)));
    return;
  }
  const float* gy = a.dy;
  DevBuf gbuf(a.act != Activation::identity ? size_t(p.N * p.K * OHW) : 0, op);
  if (gbuf.p) {
    act_grad_kernel<<<blocks_for(p.N * p.K * OHW), kT>>>(a.act, a.dy, a.y, gbuf.p, p.N * p.K * OHW);
    check_launch(op);
    gy = gbuf.p;
  }
  if (a.db) {
    bias_grad_kernel<<<unsigned(p.K), kT>>>(gy, a.db, p.N, p.K, OHW, a.accumulate);
    check_launch(op);
  }
  const bool pw = pointwise(p);
  DevBuf col(pw || !a.dw ? 0 : size_t(CRS * OHW), op);
  DevBuf dcol(pw || !a.dx ? 0 : size_t(CRS * OHW), op);
  for (int64_t n = 0; n < p.N; ++n)
    for (int64_t g = 0; g < p.groups; ++g) {
      const float* xg = a.x + (n * p.C + g * Cg) * HW;
      const float* wg = a.w + g * Kg * CRS;
      const float* gyg = gy + (n * p.K + g * Kg) * OHW;
      if (a.dw) {
        const float* B = xg;
        if (!pw) {
          im2col_kernel<<<blocks_for(CRS * OHW), kT>>>(p, xg, col.p);
          check_launch(op);
          B = col.p;
        }
        gemm_f32(conv_gemm<float>(Kg, CRS, OHW, false, gyg, OHW, true, B, OHW, a.dw + g * Kg * CRS, CRS, 1.0f), device);
      }
      if (a.dx) {
        float* dxg = a.dx + (n * p.C + g * Cg) * HW;
        if (pw) {
          gemm_f32(conv_gemm<float>(Cg, HW, Kg, true, wg, Cg, false, gyg, HW, dxg, HW, 0.0f), device);
        } else {
          gemm_f32(conv_gemm<float>(CRS, OHW, Kg, true, wg, CRS, false, gyg, OHW, dcol.p, OHW, 0.0f), device);
          col2im_kernel<<<blocks_for(Cg * HW), kT>>>(p, dcol.p, dxg);
          check_launch(op);
        }
      }
    }
  sync(op);
}

void max_pool2d_forward_f32(const PoolArgs<float>& a, int device) {
  const char* op = "max_pool2d_forward (CUDA)";
  DeviceGuard guard(device, op);
  const int64_t total = a.s.planes * a.s.OH * a.s.OW;
  if (total) max_pool_fwd<<<blocks_for(total), kT>>>(a.s, a.x, a.y);
  check_launch(op);
  sync(op);
}

void max_pool2d_backward_f32(const PoolArgs<float>& a, int device) {
  const char* op = "max_pool2d_backward (CUDA)";
  DeviceGuard guard(device, op);
  FL_CUDA_CHECK(op, cudaMemset(a.dx, 0, size_t(a.s.planes * a.s.H * a.s.W) * sizeof(float)));
  const int64_t total = a.s.planes * a.s.OH * a.s.OW;
  if (total) max_pool_bwd<<<blocks_for(total), kT>>>(a.s, a.x, a.dy, a.dx);
  check_launch(op);
  sync(op);
}

void avg_pool2d_forward_f32(const PoolArgs<float>& a, int device) {
  const char* op = "avg_pool2d_forward (CUDA)";
  DeviceGuard guard(device, op);
  const int64_t total = a.s.planes * a.s.OH * a.s.OW;
  if (total) avg_pool_fwd<<<blocks_for(total), kT>>>(a.s, a.x, a.y);
  check_launch(op);
  sync(op);
}

void avg_pool2d_backward_f32(const PoolArgs<float>& a, int device) {
  const char* op = "avg_pool2d_backward (CUDA)";
  DeviceGuard guard(device, op);
  FL_CUDA_CHECK(op, cudaMemset(a.dx, 0, size_t(a.s.planes * a.s.H * a.s.W) * sizeof(float)));
  const int64_t total = a.s.planes * a.s.OH * a.s.OW;
  if (total) avg_pool_bwd<<<blocks_for(total), kT>>>(a.s, a.dy, a.dx);
  check_launch(op);
  sync(op);
}

void batch_norm_forward_f32(const BatchNormArgs<float>& a, int device) {
  const char* op = "batch_norm_forward (CUDA)";
  DeviceGuard guard(device, op);
  if (a.C) bn_fwd<<<unsigned(a.C), kT>>>(a);
  check_launch(op);
  sync(op);
}

void batch_norm_backward_f32(const BatchNormArgs<float>& a, int device) {
  const char* op = "batch_norm_backward (CUDA)";
  DeviceGuard guard(device, op);
  if (a.C) bn_bwd<<<unsigned(a.C), kT>>>(a);
  check_launch(op);
  sync(op);
}

}  // namespace cuda
}  // namespace fl
