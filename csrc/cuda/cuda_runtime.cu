// The CUDA build's non-kernel parts: build facts, the device count, error
// handling, the device guard, the per-device workspaces and the metadata
// table of the multi-tensor launch.  No CUDA call happens before the first
// call into this API, so the module imports on machines without GPU or driver.
#define FL_ISA_NS isa_cuda

#include <cuda_runtime.h>

#include <array>
#include <climits>
#include <cstring>
#include <memory>
#include <string>

#include "cuda/cuda_api.h"
#include "cuda/cuda_common.cuh"

namespace fl {
namespace FL_ISA_NS {

void throw_cuda_error(cudaError_t err, const char* op, const char* call) {
  (void)cudaGetLastError();  // clear a non-sticky error so the next call starts clean
  // `call` is the checked expression; keep its function name only.
  std::string fn(call);
  const size_t paren = fn.find('(');
  if (paren != std::string::npos) fn.resize(paren);
  throw std::runtime_error(std::string("fusedlearn CUDA ") + op + ": " + fn + " failed: " +
                           cudaGetErrorName(err) + " (" + cudaGetErrorString(err) + ")");
}

DeviceGuard::DeviceGuard(int device, const char* op) {
  int n = 0;
  const cudaError_t err = cudaGetDeviceCount(&n);
  if (err != cudaSuccess) {
    (void)cudaGetLastError();
    throw ValueError(std::string(op) + ": got CUDA arrays but no CUDA device is usable here (" +
                     cudaGetErrorString(err) + ")");
  }
  if (device < 0 || device >= n)
    throw ValueError(std::string(op) + ": CUDA device " + std::to_string(device) + " does not exist (" +
                     std::to_string(n) + " device(s) visible)");
  FL_CUDA_CHECK(op, cudaGetDevice(&prev_));
  if (prev_ != device) {
    FL_CUDA_CHECK(op, cudaSetDevice(device));
    switched_ = true;
  }
}

DeviceGuard::~DeviceGuard() {
  if (switched_ && cudaSetDevice(prev_) != cudaSuccess) (void)cudaGetLastError();
}

namespace {
constexpr int kMaxDevices = 64;

size_t grown(size_t cap, size_t need) {
  size_t c = cap < 4096 ? 4096 : cap;
  while (c < need) c *= 2;
  return c;
}
}  // namespace

Workspace& workspace(int device, const char* op) {
  // Created on first use (never at static-initialisation time) and never
  // destroyed: freeing CUDA memory from a static destructor races the
  // runtime's own teardown.
  static std::mutex registry_mu;
  static auto* registry = new std::array<Workspace*, kMaxDevices>{};
  if (device < 0 || device >= kMaxDevices)
    throw ValueError(std::string(op) + ": CUDA device " + std::to_string(device) + " out of range");
  std::lock_guard<std::mutex> lock(registry_mu);
  Workspace*& slot = (*registry)[size_t(device)];
  if (!slot) {
    auto ws = std::make_unique<Workspace>();
    FL_CUDA_CHECK(op, cudaDeviceGetAttribute(&ws->sm_count, cudaDevAttrMultiProcessorCount, device));
    if (ws->sm_count < 1) ws->sm_count = 1;
    FL_CUDA_CHECK(op, cudaEventCreateWithFlags(&ws->table_copied, cudaEventDisableTiming));
    ws->param_scratch.resize(size_t(kLargeTable));
    slot = ws.release();
  }
  return *slot;
}

const unsigned char* upload_meta(Workspace& ws, const ListMeta& meta, const char* op) {
  const size_t n = meta.bytes.size();
  // The pinned staging buffer is reused: the previous upload must have left it.
  if (ws.upload_pending) {
    FL_CUDA_CHECK(op, cudaEventSynchronize(ws.table_copied));
    ws.upload_pending = false;
  }
  if (n > ws.host_cap) {
    const size_t cap = grown(ws.host_cap, n);
    if (ws.host_table) {
      FL_CUDA_CHECK(op, cudaFreeHost(ws.host_table));
      ws.host_table = nullptr;
      ws.host_cap = 0;
    }
    void* p = nullptr;
    FL_CUDA_CHECK(op, cudaMallocHost(&p, cap));
    ws.host_table = static_cast<unsigned char*>(p);
    ws.host_cap = cap;
  }
  if (n > ws.dev_cap) {
    const size_t cap = grown(ws.dev_cap, n);
    if (ws.dev_table) {
      // kernels queued earlier on the legacy stream may still read the old table
      FL_CUDA_CHECK(op, cudaStreamSynchronize(cudaStreamLegacy));
      FL_CUDA_CHECK(op, cudaFree(ws.dev_table));
      ws.dev_table = nullptr;
      ws.dev_cap = 0;
    }
    void* p = nullptr;
    FL_CUDA_CHECK(op, cudaMalloc(&p, cap));
    ws.dev_table = static_cast<unsigned char*>(p);
    ws.dev_cap = cap;
  }
  std::memcpy(ws.host_table, meta.bytes.data(), n);
  // Stream-ordered after every earlier kernel that read dev_table.
  FL_CUDA_CHECK(op, cudaMemcpyAsync(ws.dev_table, ws.host_table, n, cudaMemcpyHostToDevice, cudaStreamLegacy));
  FL_CUDA_CHECK(op, cudaEventRecord(ws.table_copied, cudaStreamLegacy));
  ws.upload_pending = true;
  return ws.dev_table;
}

double* partials_buffer(Workspace& ws, const char* op) {
  if (!ws.partials) {
    void* p = nullptr;
    FL_CUDA_CHECK(op, cudaMalloc(&p, sizeof(double) * size_t(kMaxPartials)));
    ws.partials = static_cast<double*>(p);
  }
  return ws.partials;
}

void check_list_args(DType dtype, const FlatList& list, const char* op) {
  if (dtype != DType::f32 && dtype != DType::f64)
    throw TypeError(std::string(op) + ": only float32 and float64 arrays are supported");
  if (list.count < 0 || list.count > INT_MAX / 2)
    throw ValueError(std::string(op) + ": bad number of arrays: " + std::to_string(list.count));
  if (list.count > 0 && (!list.offsets || !list.stream[0]))
    throw ValueError(std::string(op) + ": malformed array list");
}

void build_meta(const FlatList& l, int nstreams, int64_t min_chunks, ListMeta& out, const char* op) {
  const int64_t count = l.count;
  const int64_t total = l.offsets[count] - l.offsets[0];
  int log2 = kMaxChunkLog2;
  while (log2 > kMinChunkLog2 && (total >> log2) < min_chunks) --log2;

  const size_t off_numel = 16;
  const size_t off_ptr = off_numel + 8 * size_t(count);
  const size_t off_begin = off_ptr + 8 * size_t(count) * size_t(nstreams);
  out.bytes.resize(off_begin + 4 * (size_t(count) + 1));
  unsigned char* b = out.bytes.data();

  const int64_t chunk = int64_t(1) << log2;
  int64_t chunks = 0;
  for (int64_t t = 0; t < count; ++t) {
    const int64_t n = l.offsets[t + 1] - l.offsets[t];
    if (n < 0) throw ValueError(std::string(op) + ": malformed array list (negative size)");
    std::memcpy(b + off_numel + 8 * size_t(t), &n, 8);
    for (int s = 0; s < nstreams; ++s) {
      const void* p = l.stream[s] ? l.stream[s][t] : nullptr;
      if (l.stream[s] && n > 0 && !p)
        throw ValueError(std::string(op) + ": null data pointer in a non-empty CUDA array");
      const uint64_t a = static_cast<uint64_t>(reinterpret_cast<uintptr_t>(p));
      std::memcpy(b + off_ptr + 8 * (size_t(t) * size_t(nstreams) + size_t(s)), &a, 8);
    }
    const int32_t first = static_cast<int32_t>(chunks);
    std::memcpy(b + off_begin + 4 * size_t(t), &first, 4);
    chunks += (n + chunk - 1) >> log2;
    if (chunks > INT32_MAX) throw ValueError(std::string(op) + ": arrays too large for one launch");
  }
  const int32_t last = static_cast<int32_t>(chunks);
  std::memcpy(b + off_begin + 4 * size_t(count), &last, 4);
  const int32_t header[4] = {static_cast<int32_t>(count), last, log2, nstreams};
  std::memcpy(b, header, sizeof(header));
  out.nchunks = last;
}

}  // namespace FL_ISA_NS

namespace cuda {

bool built() { return true; }

int device_count() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    (void)cudaGetLastError();  // no driver / no GPU: not an error for us
    return 0;
  }
  return n;
}

std::string runtime_version() {
  int v = 0;
  if (cudaRuntimeGetVersion(&v) != cudaSuccess) {
    (void)cudaGetLastError();
    return "";
  }
  return std::to_string(v / 1000) + "." + std::to_string((v % 1000) / 10);
}

}  // namespace cuda
}  // namespace fl
