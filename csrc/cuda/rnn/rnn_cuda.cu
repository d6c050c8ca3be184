// Recurrent layers on CUDA: the fused cell phases of kernels/rnn_cell.h
// (instantiated with V = float, one thread per hidden unit j looping over the
// B rows, so each bias / peephole gradient column has one owner) and the
// sequence driver of kernels/rnn_driver.h, whose products run on the CUDA
// SGEMM (cuda::gemm_f32).  Kept simple: one launch per phase, synchronous
// GEMMs, lengths uploaded once per call.
//
// UNVERIFIED: compiled for sm_80 / sm_90 but never run on a GPU.
#define FL_ISA_NS isa_cuda

#include <cuda_runtime.h>

#include <vector>

#include "kernels/rnn_cell.h"
#include "kernels/rnn_driver.h"
#include "cuda/cuda_api.h"
#include "cuda/cuda_common.cuh"

namespace fl {
namespace FL_ISA_NS {
namespace {

constexpr int kCellThreads = 128;

template <RnnPhase P>
__global__ void rnn_cell_kernel(RnnCellArgs<float> a) {
  const int64_t j = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (j < a.H) rnn_cell_cols<ScalarOps<float>, P>(a, j);
}

template <RnnPhase P>
void launch_cell(const RnnCellArgs<float>& a) {
  const unsigned blocks = unsigned((a.H + kCellThreads - 1) / kCellThreads);
  rnn_cell_kernel<P><<<blocks, kCellThreads, 0, cudaStreamLegacy>>>(a);
}

struct CudaBackend {
  int device;
  const int64_t* d_lengths;  // device copy of the lengths (or null)
  const char* op;
  void gemm(const GemmArgs<float>& g) {
    if (g.M <= 0 || g.N <= 0) return;
    cuda::gemm_f32(g, device);
  }
  const float* prepack(int, const GemmArgs<float>&) { return nullptr; }  // the CUDA SGEMM tiles B itself
  int64_t packed_rows_max() { return 0; }
  void cell(const RnnCellArgs<float>& host_args) {
    if (host_args.B <= 0 || host_args.H <= 0) return;
    RnnCellArgs<float> a = host_args;
    a.lengths = a.lengths ? d_lengths : nullptr;
    switch (a.phase) {
      case RnnPhase::lstm_fwd: launch_cell<RnnPhase::lstm_fwd>(a); break;
      case RnnPhase::lstm_bwd: launch_cell<RnnPhase::lstm_bwd>(a); break;
      case RnnPhase::gru_fwd: launch_cell<RnnPhase::gru_fwd>(a); break;
      case RnnPhase::gru_bwd: launch_cell<RnnPhase::gru_bwd>(a); break;
      case RnnPhase::cho_fwd1: launch_cell<RnnPhase::cho_fwd1>(a); break;
      case RnnPhase::cho_fwd2: launch_cell<RnnPhase::cho_fwd2>(a); break;
      case RnnPhase::cho_bwd1: launch_cell<RnnPhase::cho_bwd1>(a); break;
      case RnnPhase::cho_bwd2: launch_cell<RnnPhase::cho_bwd2>(a); break;
    }
    FL_CUDA_CHECK(op, cudaGetLastError());
  }
  void copy(float* dst, const float* src, int64_t n) {
    FL_CUDA_CHECK(op, cudaMemcpyAsync(dst, src, size_t(n) * sizeof(float), cudaMemcpyDeviceToDevice,
                                      cudaStreamLegacy));
  }
  void zero(float* dst, int64_t n) {
    FL_CUDA_CHECK(op, cudaMemsetAsync(dst, 0, size_t(n) * sizeof(float), cudaStreamLegacy));
  }
};

// Runs fn(backend) with the lengths on the device for the duration of the call.
template <class Fn>
void with_backend(const RnnSeqArgs<float>& a, int device, const char* op, Fn&& fn) {
  DeviceGuard guard(device, op);
  int64_t* d_len = nullptr;
  if (a.lengths && a.B > 0) {
    FL_CUDA_CHECK(op, cudaMalloc(&d_len, size_t(a.B) * sizeof(int64_t)));
    const cudaError_t e = cudaMemcpy(d_len, a.lengths, size_t(a.B) * sizeof(int64_t), cudaMemcpyHostToDevice);
    if (e != cudaSuccess) {
      cudaFree(d_len);
      FL_CUDA_CHECK(op, e);
    }
  }
  CudaBackend be{device, d_len, op};
  try {
    fn(be);
    FL_CUDA_CHECK(op, cudaStreamSynchronize(cudaStreamLegacy));
  } catch (...) {
    if (d_len) cudaFree(d_len);
    throw;
  }
  if (d_len) FL_CUDA_CHECK(op, cudaFree(d_len));
}

}  // namespace
}  // namespace FL_ISA_NS

namespace cuda {

void rnn_forward_f32(const RnnSeqArgs<float>& args, int device) {
  FL_ISA_NS::with_backend(args, device, "rnn_forward (CUDA, float32)",
                          [&](FL_ISA_NS::CudaBackend& be) { FL_ISA_NS::rnn_seq_forward<float>(args, be); });
}

void rnn_backward_f32(const RnnSeqArgs<float>& args, int device) {
  FL_ISA_NS::with_backend(args, device, "rnn_backward (CUDA, float32)",
                          [&](FL_ISA_NS::CudaBackend& be) { FL_ISA_NS::rnn_seq_backward<float>(args, be); });
}

}  // namespace cuda
}  // namespace fl
