// Fused passes over a list of CUDA arrays (stream 0 of the FlatList): sum of
// squares (accumulated in double), max |x|, non-finite detection, scaling and
// clamping.  Each is one launch (cuda/cuda_common.cuh); a reduction writes one
// double per block and the host combines those partials in a fixed order
// (deterministic), after one synchronising copy.
#define FL_ISA_NS isa_cuda

#include <cuda_runtime.h>

#include <cmath>
#include <mutex>
#include <vector>

#include "cuda/cuda_api.h"
#include "cuda/cuda_common.cuh"

namespace fl {
namespace FL_ISA_NS {
namespace {

// ---- reductions: init / add one element / combine two partials -------------------
struct SumSq {
  static constexpr double init = 0.0;
  template <class T>
  __host__ __device__ __forceinline__ static double add(double acc, T x) {
    const double d = static_cast<double>(x);
    return acc + d * d;
  }
  __host__ __device__ __forceinline__ static double combine(double a, double b) { return a + b; }
};

struct AbsMax {  // NaN wins over everything (as the CPU kernel)
  static constexpr double init = 0.0;
  template <class T>
  __host__ __device__ __forceinline__ static double add(double acc, T x) {
    return combine(acc, std::fabs(static_cast<double>(x)));
  }
  __host__ __device__ __forceinline__ static double combine(double a, double b) {
    if (std::isnan(a)) return a;
    if (std::isnan(b)) return b;
    return a > b ? a : b;
  }
};

struct NonFinite {  // 1 when any element is NaN or +-Inf
  static constexpr double init = 0.0;
  template <class T>
  __host__ __device__ __forceinline__ static double add(double acc, T x) {
    return std::isfinite(x) ? acc : 1.0;
  }
  __host__ __device__ __forceinline__ static double combine(double a, double b) { return a > b ? a : b; }
};

// Block-wide combine of one value per thread; the result is valid in thread 0.
template <class Acc>
__device__ __forceinline__ double block_reduce(double v) {
  __shared__ double warp_part[kThreads / 32];
  for (int off = 16; off > 0; off >>= 1) v = Acc::combine(v, __shfl_down_sync(0xffffffffu, v, off));
  const int lane = int(threadIdx.x) & 31, warp = int(threadIdx.x) >> 5;
  if (lane == 0) warp_part[warp] = v;
  __syncthreads();
  if (warp == 0) {
    v = lane < int(blockDim.x >> 5) ? warp_part[lane] : Acc::init;
    for (int off = 16; off > 0; off >>= 1) v = Acc::combine(v, __shfl_down_sync(0xffffffffu, v, off));
  }
  return v;
}

template <class T, class Acc>
struct ReduceOp {
  double* partials;  // one per block

  // This thread's partial over the chunks of its block.
  __host__ __device__ __forceinline__ double thread_partial(const MetaView& m, Lane ln) const {
    double acc = Acc::init;
    for (int c = ln.block; c < m.nchunks; c += ln.nblocks) {
      const Chunk k = chunk_at(m, c);
      const T* __restrict__ x = stream_ptr<T>(m, k, 0);
      int i = 0;
      if (aligned16(x)) {
        constexpr int W = Pack<T>::n;
        const int nv = k.n / W;
        for (int v = ln.thread; v < nv; v += ln.nthreads) {
          const Pack<T> X = load_pack(x + v * W);
FL_UNROLL
          for (int e = 0; e < W; ++e) acc = Acc::add(acc, X.v[e]);
        }
        i = nv * W;
      }
      for (int j = i + ln.thread; j < k.n; j += ln.nthreads) acc = Acc::add(acc, x[j]);
    }
    return acc;
  }

  __device__ __forceinline__ void operator()(const MetaView& m, Lane ln) const {
    const double acc = block_reduce<Acc>(thread_partial(m, ln));
    if (ln.thread == 0) partials[ln.block] = acc;
  }
};

// ---- maps: x = f(x) in place --------------------------------------------------------
template <class T>
struct ScaleF {
  T a;
  __host__ __device__ __forceinline__ T operator()(T x) const { return x * a; }
};
template <class T>
struct ClampF {  // NaN stays NaN (comparisons with NaN are false), as torch.clamp
  T lo, hi;
  __host__ __device__ __forceinline__ T operator()(T x) const { return x < lo ? lo : (x > hi ? hi : x); }
};

template <class T, class F>
struct MapOp {
  F f;

  __host__ __device__ __forceinline__ void operator()(const MetaView& m, Lane ln) const {
    for (int c = ln.block; c < m.nchunks; c += ln.nblocks) {
      const Chunk k = chunk_at(m, c);
      T* __restrict__ x = stream_ptr<T>(m, k, 0);
      int i = 0;
      if (aligned16(x)) {
        constexpr int W = Pack<T>::n;
        const int nv = k.n / W;
        for (int v = ln.thread; v < nv; v += ln.nthreads) {
          Pack<T> X = load_pack(x + v * W);
FL_UNROLL
          for (int e = 0; e < W; ++e) X.v[e] = f(X.v[e]);
          store_pack(x + v * W, X);
        }
        i = nv * W;
      }
      for (int j = i + ln.thread; j < k.n; j += ln.nthreads) x[j] = f(x[j]);
    }
  }
};

// ---- host side ------------------------------------------------------------------------
template <class T, class Acc>
double reduce_list(const FlatList& list, int device, const char* name) {
  DeviceGuard guard(device, name);
  Workspace& ws = workspace(device, name);
  std::lock_guard<std::mutex> lock(ws.mu);
  build_meta(list, 1, int64_t(ws.sm_count) * kBlocksPerSm, ws.meta, name);
  if (ws.meta.nchunks == 0) return Acc::init;
  const int grid = list_grid(ws, ws.meta.nchunks, kMaxPartials);
  const ReduceOp<T, Acc> op{partials_buffer(ws, name)};
  launch_list(op, ws, grid, name);
  std::vector<double> part(static_cast<size_t>(grid));
  // Synchronous: ordered after the kernel on the legacy default stream.
  FL_CUDA_CHECK(name, cudaMemcpy(part.data(), op.partials, sizeof(double) * part.size(), cudaMemcpyDeviceToHost));
  double acc = Acc::init;
  for (double p : part) acc = Acc::combine(acc, p);
  return acc;
}

template <class T, class F>
void map_list(const FlatList& list, const F& f, int device, const char* name) {
  DeviceGuard guard(device, name);
  Workspace& ws = workspace(device, name);
  std::lock_guard<std::mutex> lock(ws.mu);
  build_meta(list, 1, int64_t(ws.sm_count) * kBlocksPerSm, ws.meta, name);
  if (ws.meta.nchunks == 0) return;
  const MapOp<T, F> op{f};
  launch_list(op, ws, list_grid(ws, ws.meta.nchunks, ws.sm_count * kBlocksPerSm), name);
}

template <class Acc>
double reduce_any(DType dtype, const FlatList& list, int device, const char* name) {
  check_list_args(dtype, list, name);
  if (list.count == 0) return Acc::init;
  return dtype == DType::f32 ? reduce_list<float, Acc>(list, device, name)
                             : reduce_list<double, Acc>(list, device, name);
}

}  // namespace
}  // namespace FL_ISA_NS

namespace cuda {

double sumsq(DType dtype, const FlatList& list, int device) {
  return FL_ISA_NS::reduce_any<FL_ISA_NS::SumSq>(dtype, list, device, "sum_of_squares (CUDA)");
}

double absmax(DType dtype, const FlatList& list, int device) {
  return FL_ISA_NS::reduce_any<FL_ISA_NS::AbsMax>(dtype, list, device, "abs_max (CUDA)");
}

bool nonfinite(DType dtype, const FlatList& list, int device) {
  return FL_ISA_NS::reduce_any<FL_ISA_NS::NonFinite>(dtype, list, device, "has_nonfinite (CUDA)") != 0.0;
}

void scale(DType dtype, const FlatList& list, double a, int device) {
  using namespace FL_ISA_NS;
  const char* name = "scale_ (CUDA)";
  check_list_args(dtype, list, name);
  if (list.count == 0) return;
  if (dtype == DType::f32)
    map_list<float>(list, ScaleF<float>{static_cast<float>(a)}, device, name);
  else
    map_list<double>(list, ScaleF<double>{a}, device, name);
}

void clamp(DType dtype, const FlatList& list, double lo, double hi, int device) {
  using namespace FL_ISA_NS;
  const char* name = "clamp_ (CUDA)";
  check_list_args(dtype, list, name);
  if (list.count == 0) return;
  if (dtype == DType::f32)
    map_list<float>(list, ClampF<float>{static_cast<float>(lo), static_cast<float>(hi)}, device, name);
  else
    map_list<double>(list, ClampF<double>{lo, hi}, device, name);
}

}  // namespace cuda
}  // namespace fl
