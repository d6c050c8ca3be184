// The fused multi-tensor optimizer step on CUDA: one launch applies a rule of
// kernels/optim_rules.h (instantiated here with V = float / double) to every
// element of every tensor of a list.  See cuda/cuda_common.cuh for the launch.
#define FL_ISA_NS isa_cuda

#include <cuda_runtime.h>

#include <mutex>
#include <string>
#include <type_traits>

#include "kernels/optim_rules.h"
#include "cuda/cuda_api.h"
#include "cuda/cuda_common.cuh"

namespace fl {
namespace FL_ISA_NS {
namespace {

// Applies `rule` to elements [0, n) of one chunk.  s_k is the k-th state
// stream (nullptr when the rule does not use it in this call); NS states at
// most are touched.  `vec`: every non-null pointer is 16-byte aligned.
template <class T, class Rule, int NS>
__host__ __device__ __forceinline__ void optim_span(const Rule& rule, T* __restrict__ p, const T* __restrict__ g,
                                                    T* __restrict__ s0, T* __restrict__ s1, T* __restrict__ s2,
                                                    int n, bool vec, Lane ln) {
  int i = 0;
  if (vec) {
    constexpr int W = Pack<T>::n;
    const int nv = n / W;
    for (int v = ln.thread; v < nv; v += ln.nthreads) {
      const int j = v * W;
      Pack<T> P = load_pack(p + j);
      const Pack<T> G = load_pack(g + j);
      Pack<T> A = {}, B = {}, C = {};
      if (s0) A = load_pack(s0 + j);
      if constexpr (NS > 1) { if (s1) B = load_pack(s1 + j); }
      if constexpr (NS > 2) { if (s2) C = load_pack(s2 + j); }
FL_UNROLL
      for (int e = 0; e < W; ++e) rule(P.v[e], G.v[e], A.v[e], B.v[e], C.v[e]);
      store_pack(p + j, P);
      if (s0) store_pack(s0 + j, A);
      if constexpr (NS > 1) { if (s1) store_pack(s1 + j, B); }
      if constexpr (NS > 2) { if (s2) store_pack(s2 + j, C); }
    }
    i = nv * W;
  }
  for (int j = i + ln.thread; j < n; j += ln.nthreads) {
    T pv = p[j];
    T a = s0 ? s0[j] : T(0);
    T b = T(0), c = T(0);
    if constexpr (NS > 1) { if (s1) b = s1[j]; }
    if constexpr (NS > 2) { if (s2) c = s2[j]; }
    rule(pv, g[j], a, b, c);
    p[j] = pv;
    if (s0) s0[j] = a;
    if constexpr (NS > 1) { if (s1) s1[j] = b; }
    if constexpr (NS > 2) { if (s2) s2[j] = c; }
  }
}

// Streams in the table: 0 params, 1 grads, 2 .. 1+NS states.
template <class T, class Rule, int NS>
struct OptimOp {
  static_assert(NS >= 1 && NS <= kMaxStates, "rules have 1 to kMaxStates state streams");
  Rule rule;

  __host__ __device__ __forceinline__ void operator()(const MetaView& m, Lane ln) const {
    for (int c = ln.block; c < m.nchunks; c += ln.nblocks) {
      const Chunk k = chunk_at(m, c);
      T* p = stream_ptr<T>(m, k, 0);
      const T* g = stream_ptr<T>(m, k, 1);
      T* s0 = stream_ptr<T>(m, k, 2);
      T* s1 = nullptr;
      T* s2 = nullptr;
      if constexpr (NS > 1) s1 = stream_ptr<T>(m, k, 3);
      if constexpr (NS > 2) s2 = stream_ptr<T>(m, k, 4);
      const bool vec = aligned16(p) && aligned16(g) && aligned16(s0) && aligned16(s1) && aligned16(s2);
      optim_span<T, Rule, NS>(rule, p, g, s0, s1, s2, k.n, vec, ln);
    }
  }
};

template <template <class> class R, class H, int NS, class T>
void run_rule(const void* hyper, const FlatList& list, Workspace& ws, const char* name) {
  using Rule = R<T>;
  static_assert(std::is_trivially_copyable<Rule>::value, "rule functors are passed to the kernel by value");
  const OptimOp<T, Rule, NS> op{Rule(*static_cast<const H*>(hyper))};
  build_meta(list, 2 + NS, int64_t(ws.sm_count) * kBlocksPerSm, ws.meta, name);
  if (ws.meta.nchunks == 0) return;
  launch_list(op, ws, list_grid(ws, ws.meta.nchunks, ws.sm_count * kBlocksPerSm), name);
}

const char* rule_op_name(int rule) {
  switch (rule) {
#define FL_RULE_NAME(name, R, H, S) \
  case kRule_##name:                \
    return #name "_ (CUDA)";
    FL_OPTIM_RULES(FL_RULE_NAME)
#undef FL_RULE_NAME
    default:
      return "optim_step (CUDA)";
  }
}

}  // namespace
}  // namespace FL_ISA_NS

namespace cuda {

void optim_step(int rule, const void* hyper, DType dtype, const FlatList& list, int device) {
  using namespace FL_ISA_NS;
  const char* name = rule_op_name(rule);
  if (rule < 0 || rule >= kNumRules) throw ValueError(std::string(name) + ": unknown rule " + std::to_string(rule));
  if (!hyper) throw ValueError(std::string(name) + ": missing hyperparameters");
  check_list_args(dtype, list, name);
  if (list.count == 0) return;
  if (!list.stream[1]) throw ValueError(std::string(name) + ": missing gradients");

  DeviceGuard guard(device, name);
  Workspace& ws = workspace(device, name);
  std::lock_guard<std::mutex> lock(ws.mu);
  const bool f32 = dtype == DType::f32;
  switch (rule) {
#define FL_RULE_CASE(rname, R, H, S)                    \
  case kRule_##rname:                                   \
    if (f32)                                            \
      run_rule<R, H, S, float>(hyper, list, ws, name);  \
    else                                                \
      run_rule<R, H, S, double>(hyper, list, ws, name); \
    break;
    FL_OPTIM_RULES(FL_RULE_CASE)
#undef FL_RULE_CASE
    default:
      break;
  }
}

}  // namespace cuda
}  // namespace fl
