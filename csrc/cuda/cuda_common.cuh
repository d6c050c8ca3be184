// Internal to the CUDA build: error checking, the device guard, the
// per-device workspace and the multi-tensor list launch that every CUDA
// kernel family (optimizer steps, reductions, maps) is built on.
//
// A list call is ONE kernel launch.  The host packs a small metadata table
// (ListMeta below: per-tensor element counts, per-tensor device pointers of
// the streams used, and the prefix sums of per-tensor chunk counts) and hands
// it to the kernel either by value as a __grid_constant__ kernel parameter
// (two sizes; CUDA 12.1+ allows up to 32764 bytes of parameters on sm_70+)
// or, when it is larger, through one cudaMemcpyAsync into a reusable device
// buffer.  Blocks grid-stride over chunks of 2^12 .. 2^16 elements; a block
// finds the tensor of its chunk by binary search over the chunk prefix sums.
#pragma once
#ifndef FL_ISA_NS
#error "#define FL_ISA_NS isa_cuda before including cuda/cuda_common.cuh"
#endif

#include <cuda_runtime.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <vector>

#include "core/errors.h"
#include "core/macros.h"
#include "kernels/kernel_table.h"

namespace fl {
namespace FL_ISA_NS {

// ---- errors -----------------------------------------------------------------
// Throws std::runtime_error("fusedlearn CUDA <op>: <call> failed: <error string>").
[[noreturn]] void throw_cuda_error(cudaError_t err, const char* op, const char* call);
inline void cuda_check(cudaError_t err, const char* op, const char* call) {
  if (err != cudaSuccess) throw_cuda_error(err, op, call);
}
#define FL_CUDA_CHECK(op, call) ::fl::FL_ISA_NS::cuda_check((call), (op), #call)

// Makes `device` current for the lifetime of the guard, then restores the
// previous one.  Throws ValueError for an ordinal that is not a usable device.
class DeviceGuard {
 public:
  DeviceGuard(int device, const char* op);
  ~DeviceGuard();
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;

 private:
  int prev_ = -1;
  bool switched_ = false;
};

// ---- launch geometry ----------------------------------------------------------
constexpr int kThreads = 256;                 // threads per block of every list kernel
constexpr int kBlocksPerSm = 2048 / kThreads;  // resident blocks per SM at full occupancy
constexpr int kMinChunkLog2 = 12;              // chunk sizes 4K .. 64K elements
constexpr int kMaxChunkLog2 = 16;
constexpr int kMaxPartials = 2048;  // reductions: at most this many blocks (one partial each)

// Metadata table sizes passed by value.  The small one keeps the whole
// parameter block under the classic 4 KB limit; the large one needs CUDA 12.1+
// on sm_70+ (32764 bytes of kernel parameters), which this build requires
// anyway (sm_80 and up, CUDA 13 runtime).
constexpr int kSmallTable = 3840;
constexpr int kLargeTable = 31744;
constexpr int kMaxKernelParams = 32764;

template <int N>
struct ParamTable {
  alignas(16) unsigned char bytes[N];
};

// ---- the metadata table ---------------------------------------------------------
// Layout (all offsets 8-byte aligned):
//   int32 header[4] = {count, nchunks, chunk_log2, nstreams}
//   int64 numel[count]
//   uint64 ptr[count][nstreams]      device addresses (0 for an absent stream)
//   int32 chunk_begin[count + 1]     prefix sums of per-tensor chunk counts
struct ListMeta {
  std::vector<unsigned char> bytes;
  int nchunks = 0;
};

// Packs `l` (its first `nstreams` streams) into `out`.  The chunk size is the
// largest power of two in [2^12, 2^16] that still gives about `min_chunks`
// chunks, so a single mid-sized tensor still spreads over every SM.
void build_meta(const FlatList& l, int nstreams, int64_t min_chunks, ListMeta& out, const char* op);

struct MetaView {
  int count, nchunks, chunk_log2, nstreams;
  const long long* numel;
  const unsigned long long* ptr;
  const int* chunk_begin;

  __host__ __device__ __forceinline__ explicit MetaView(const unsigned char* b) {
    const int* h = reinterpret_cast<const int*>(b);
    count = h[0];
    nchunks = h[1];
    chunk_log2 = h[2];
    nstreams = h[3];
    numel = reinterpret_cast<const long long*>(b + 16);
    ptr = reinterpret_cast<const unsigned long long*>(b + 16 + 8 * size_t(count));
    chunk_begin = reinterpret_cast<const int*>(b + 16 + 8 * size_t(count) * (1 + size_t(nstreams)));
  }

  // The tensor holding chunk c: the last t with chunk_begin[t] <= c (empty
  // tensors own no chunk, so the search never stops on one).
  __host__ __device__ __forceinline__ int tensor_of(int c) const {
    int lo = 0, hi = count;
    while (hi - lo > 1) {
      const int mid = (lo + hi) >> 1;
      if (chunk_begin[mid] <= c) lo = mid; else hi = mid;
    }
    return lo;
  }
};

// One chunk: tensor t, elements [begin, begin + n) of it.
struct Chunk {
  int t;
  int n;
  long long begin;
};
__host__ __device__ __forceinline__ Chunk chunk_at(const MetaView& m, int c) {
  Chunk k;
  k.t = m.tensor_of(c);
  k.begin = static_cast<long long>(c - m.chunk_begin[k.t]) << m.chunk_log2;
  const long long left = m.numel[k.t] - k.begin;
  const long long size = 1LL << m.chunk_log2;
  k.n = static_cast<int>(left < size ? left : size);
  return k;
}
template <class T>
__host__ __device__ __forceinline__ T* stream_ptr(const MetaView& m, const Chunk& k, int s) {
  const unsigned long long a = m.ptr[size_t(k.t) * size_t(m.nstreams) + size_t(s)];
  return a ? reinterpret_cast<T*>(a) + k.begin : nullptr;
}

// Full unrolling of the short per-pack loops (device pass only: the same
// loops also compile for the host, where the pragma is unknown to gcc).
#if defined(__CUDA_ARCH__)
#define FL_UNROLL _Pragma("unroll")
#else
#define FL_UNROLL
#endif

// 16 bytes of T (float4 / double2 sized) for vectorised loads and stores.
template <class T>
struct alignas(16) Pack {
  static constexpr int n = int(16 / sizeof(T));
  T v[n];
};
template <class T>
__host__ __device__ __forceinline__ Pack<T> load_pack(const T* p) {
  return *reinterpret_cast<const Pack<T>*>(p);
}
template <class T>
__host__ __device__ __forceinline__ void store_pack(T* p, const Pack<T>& x) {
  *reinterpret_cast<Pack<T>*>(p) = x;
}
__host__ __device__ __forceinline__ bool aligned16(const void* p) {
  return (reinterpret_cast<unsigned long long>(p) & 15ULL) == 0;
}

// Where a thread stands in the launch.  The element loops take it as an
// argument (rather than reading blockIdx / threadIdx) so that they also run
// on the host, where a test can emulate a launch thread by thread.
struct Lane {
  int block, nblocks, thread, nthreads;
};

// ---- kernels: Op::operator()(const MetaView&, Lane) does the work -----------------------
__device__ __forceinline__ Lane this_lane() {
  return Lane{int(blockIdx.x), int(gridDim.x), int(threadIdx.x), int(blockDim.x)};
}
template <class Op, int N>
__global__ void __launch_bounds__(kThreads)
    list_kernel_param(const __grid_constant__ Op op, const __grid_constant__ ParamTable<N> table) {
  op(MetaView(table.bytes), this_lane());
}
template <class Op>
__global__ void __launch_bounds__(kThreads)
    list_kernel_global(const __grid_constant__ Op op, const unsigned char* __restrict__ table) {
  op(MetaView(table), this_lane());
}

// ---- per-device workspace -----------------------------------------------------------
struct Workspace {
  std::mutex mu;  // held for the whole of a call that uses this workspace
  int sm_count = 0;
  // metadata too large for kernel parameters: pinned staging + device copy
  unsigned char* host_table = nullptr;  // pinned
  size_t host_cap = 0;
  unsigned char* dev_table = nullptr;
  size_t dev_cap = 0;
  cudaEvent_t table_copied = nullptr;  // recorded after the last upload from host_table
  bool upload_pending = false;
  double* partials = nullptr;  // kMaxPartials doubles, for reductions
  std::vector<unsigned char> param_scratch;  // kLargeTable bytes, source of by-value tables
  ListMeta meta;                             // reused host-side table
};

// The workspace of `device` (which must be current: see DeviceGuard); created
// on first use, never freed (it lives until the process exits).
Workspace& workspace(int device, const char* op);
// Copies `meta` into the device buffer of `ws` (stream-ordered on the legacy
// default stream) and returns its device address.
const unsigned char* upload_meta(Workspace& ws, const ListMeta& meta, const char* op);
double* partials_buffer(Workspace& ws, const char* op);

inline int list_grid(const Workspace& ws, int nchunks, int cap) {
  int g = ws.sm_count * kBlocksPerSm;
  if (g > cap) g = cap;
  if (g > nchunks) g = nchunks;
  return g < 1 ? 1 : g;
}

template <class Op, int N>
void launch_param(const Op& op, Workspace& ws, int grid, const char* name) {
  static_assert(sizeof(Op) + sizeof(ParamTable<N>) + 16 <= kMaxKernelParams, "kernel parameters too large");
  static_assert(N <= kLargeTable, "param_scratch is kLargeTable bytes");
  // cudaLaunchKernel copies sizeof(ParamTable<N>) bytes from the scratch
  // buffer into the launch; the bytes past the table are never read.
  void* args[] = {const_cast<Op*>(&op), ws.param_scratch.data()};
  FL_CUDA_CHECK(name, cudaLaunchKernel(reinterpret_cast<const void*>(&list_kernel_param<Op, N>), dim3(grid),
                                       dim3(kThreads), args, 0, cudaStreamLegacy));
}

// Launches `op` over ws.meta on the legacy default stream.
template <class Op>
void launch_list(const Op& op, Workspace& ws, int grid, const char* name) {
  const ListMeta& meta = ws.meta;
  const size_t n = meta.bytes.size();
  if (n <= size_t(kLargeTable)) {
    std::copy(meta.bytes.begin(), meta.bytes.end(), ws.param_scratch.begin());
    if (n <= size_t(kSmallTable))
      launch_param<Op, kSmallTable>(op, ws, grid, name);
    else
      launch_param<Op, kLargeTable>(op, ws, grid, name);
  } else {
    const unsigned char* table = upload_meta(ws, meta, name);
    void* args[] = {const_cast<Op*>(&op), &table};
    FL_CUDA_CHECK(name, cudaLaunchKernel(reinterpret_cast<const void*>(&list_kernel_global<Op>), dim3(grid),
                                         dim3(kThreads), args, 0, cudaStreamLegacy));
  }
  FL_CUDA_CHECK(name, cudaGetLastError());
}

// Checks the arguments every list entry point shares.
void check_list_args(DType dtype, const FlatList& list, const char* op);

}  // namespace FL_ISA_NS
}  // namespace fl
