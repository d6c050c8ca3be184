// Host emulation of the CUDA list kernels (no GPU needed): runs every
// (block, thread) lane of a launch on the CPU through the real build_meta /
// OptimOp / ReduceOp / MapOp code, and checks the result bit for bit against
// a plain per-element loop over the same functors, plus no write outside the
// arrays.  CUDA source despite the extension (compiled with nvcc as CUDA; it
// has a main(), so it is not one of FL_CUDA_SOURCES).  The ctest target
// cuda_host_emulation (cmake/cuda_tests.cmake, -DFUSEDLEARN_TESTS=ON) builds
// and runs it; exit status 1 on any failure.
#define FL_ISA_NS isa_cuda
#include "cuda/cuda_runtime.cu"
#include "cuda/optim/optim_multi_tensor.cu"
#include "cuda/elementwise/reduce_cuda.cu"
#include <cstdio>
#include <cstdlib>
#include <random>
#include <cstring>

using namespace fl;
using namespace fl::isa_cuda;

static int failures = 0;
static bool g_aligned = false;
#define EXPECT(c, ...) do { if (!(c)) { ++failures; std::printf("FAIL %s:%d: ", __FILE__, __LINE__); std::printf(__VA_ARGS__); std::printf("\n"); } } while (0)

template <class T>
struct Buf {
  std::vector<T*> base, ptr;
  ~Buf() { for (T* b : base) std::free(b); }
  void add(int64_t n, int off, std::mt19937& rng, double lo, double hi) {
    T* b = static_cast<T*>(std::aligned_alloc(64, ((n + 8) * sizeof(T) + 63) / 64 * 64));
    std::uniform_real_distribution<double> u(lo, hi);
    for (int64_t i = 0; i < n + 8; ++i) b[i] = T(-777);
    for (int64_t i = 0; i < n; ++i) b[off + i] = T(u(rng));
    base.push_back(b);
    ptr.push_back(b + off);
  }
};

template <class T, template <class> class R, class H, int NS>
void check_rule(const char* name, const H& h, std::vector<int64_t> sizes, int sm, int threads, int seed, bool drop_s1) {
  std::mt19937 rng(seed);
  const int ns = 2 + NS;
  std::vector<Buf<T>> dev(ns), ref(ns);
  std::vector<int64_t> offs{0};
  for (int64_t n : sizes) offs.push_back(offs.back() + n);
  for (int s = 0; s < ns; ++s)
    for (size_t t = 0; t < sizes.size(); ++t) {
      const int off = g_aligned ? 0 : int(rng() % 4);
      std::mt19937 r2(seed * 1000 + s * 100 + int(t));
      dev[s].add(sizes[t], off, r2, s == 3 || s == 4 ? 0.0 : -1.0, 1.0);  // second-moment-like states >= 0
      std::mt19937 r3(seed * 1000 + s * 100 + int(t));
      ref[s].add(sizes[t], 0, r3, s == 3 || s == 4 ? 0.0 : -1.0, 1.0);
    }
  FlatList l;
  l.count = int64_t(sizes.size());
  l.offsets = offs.data();
  std::vector<std::vector<void*>> vp(ns);
  for (int s = 0; s < ns; ++s) {
    for (T* p : dev[s].ptr) vp[s].push_back(p);
    l.stream[s] = (drop_s1 && s == 3) ? nullptr : vp[s].data();
  }
  ListMeta meta;
  build_meta(l, ns, int64_t(sm) * kBlocksPerSm, meta, name);
  const MetaView m(meta.bytes.data());
  EXPECT(m.count == int(sizes.size()) && m.nstreams == ns, "%s header", name);
  const int grid = std::max(1, std::min(meta.nchunks, sm * kBlocksPerSm));
  const R<T> rule(h);
  const OptimOp<T, R<T>, NS> op{rule};
  for (int step = 0; step < 3; ++step) {
    if (meta.nchunks > 0)
      for (int b = 0; b < grid; ++b)
        for (int t = 0; t < threads; ++t) op(m, Lane{b, grid, t, threads});
    for (size_t t = 0; t < sizes.size(); ++t)
      for (int64_t i = 0; i < sizes[t]; ++i) {
        T zero0 = 0, zero1 = 0, zero2 = 0;
        T& a = NS > 0 ? ref[2].ptr[t][i] : zero0;
        T& b = (NS > 1 && !drop_s1) ? ref[3].ptr[t][i] : zero1;
        T& c = NS > 2 ? ref[4].ptr[t][i] : zero2;
        rule(ref[0].ptr[t][i], ref[1].ptr[t][i], a, b, c);
      }
  }
  int64_t bad = 0;
  for (int s = 0; s < ns; ++s) {
    if (drop_s1 && s == 3) continue;
    for (size_t t = 0; t < sizes.size(); ++t)
      for (int64_t i = 0; i < sizes[t]; ++i)
        if (std::memcmp(&dev[s].ptr[t][i], &ref[s].ptr[t][i], sizeof(T)) != 0 && bad++ < 3)
          std::printf("  %s stream %d tensor %zu elem %lld: %g vs %g\n", name, s, t, (long long)i,
                      double(dev[s].ptr[t][i]), double(ref[s].ptr[t][i]));
  }
  EXPECT(bad == 0, "%s (%s): %lld mismatches", name, sizeof(T) == 4 ? "f32" : "f64", (long long)bad);
  int64_t guard_bad = 0;
  for (int s = 0; s < ns; ++s)
    for (size_t t = 0; t < sizes.size(); ++t) {
      const int64_t off = dev[s].ptr[t] - dev[s].base[t];
      for (int64_t i = 0; i < sizes[t] + 8; ++i)
        if ((i < off || i >= off + sizes[t]) && dev[s].base[t][i] != T(-777)) ++guard_bad;
    }
  EXPECT(guard_bad == 0, "%s: %lld writes outside the arrays", name, (long long)guard_bad);
}

template <class T>
void check_reduce(std::vector<int64_t> sizes, int sm, int threads, int seed) {
  std::mt19937 rng(seed);
  Buf<T> x;
  std::vector<int64_t> offs{0};
  for (int64_t n : sizes) { offs.push_back(offs.back() + n); x.add(n, g_aligned ? 0 : int(rng() % 4), rng, -3.0, 3.0); }
  std::vector<void*> vp(x.ptr.begin(), x.ptr.end());
  FlatList l;
  l.count = int64_t(sizes.size());
  l.offsets = offs.data();
  l.stream[0] = vp.data();
  ListMeta meta;
  build_meta(l, 1, int64_t(sm) * kBlocksPerSm, meta, "reduce");
  const MetaView m(meta.bytes.data());
  const int grid = std::max(1, std::min({meta.nchunks, sm * kBlocksPerSm, kMaxPartials}));
  auto emu = [&](auto acc_tag) {
    using Acc = decltype(acc_tag);
    double r = Acc::init;
    if (meta.nchunks == 0) return r;
    const ReduceOp<T, Acc> op{nullptr};
    for (int b = 0; b < grid; ++b)
      for (int t = 0; t < threads; ++t) r = Acc::combine(r, op.thread_partial(m, Lane{b, grid, t, threads}));
    return r;
  };
  double ss = 0, am = 0;
  for (size_t t = 0; t < sizes.size(); ++t)
    for (int64_t i = 0; i < sizes[t]; ++i) {
      ss += double(x.ptr[t][i]) * double(x.ptr[t][i]);
      am = std::max(am, std::fabs(double(x.ptr[t][i])));
    }
  const double es = emu(SumSq{});
  EXPECT(std::fabs(es - ss) <= 1e-12 * ss + 1e-300, "sumsq %.17g vs %.17g", es, ss);
  EXPECT(emu(AbsMax{}) == am, "absmax %g vs %g", emu(AbsMax{}), am);
  EXPECT(emu(NonFinite{}) == 0.0, "nonfinite false positive");
  // poison the last element of the last non-empty tensor
  for (size_t t = sizes.size(); t-- > 0;)
    if (sizes[t] > 0) {
      x.ptr[t][sizes[t] - 1] = T(NAN);
      EXPECT(std::isnan(emu(AbsMax{})), "absmax NaN");
      EXPECT(emu(NonFinite{}) == 1.0, "nonfinite NaN");
      x.ptr[t][sizes[t] - 1] = T(-INFINITY);
      EXPECT(emu(NonFinite{}) == 1.0, "nonfinite Inf");
      EXPECT(std::isinf(emu(AbsMax{})), "absmax inf");
      x.ptr[t][sizes[t] - 1] = T(1);
      break;
    }
  // maps
  const MapOp<T, ScaleF<T>> sc{ScaleF<T>{T(0.5)}};
  std::vector<std::vector<T>> before;
  for (size_t t = 0; t < sizes.size(); ++t) before.emplace_back(x.ptr[t], x.ptr[t] + sizes[t]);
  if (meta.nchunks > 0)
    for (int b = 0; b < grid; ++b)
      for (int t = 0; t < threads; ++t) sc(m, Lane{b, grid, t, threads});
  int64_t bad = 0;
  for (size_t t = 0; t < sizes.size(); ++t)
    for (int64_t i = 0; i < sizes[t]; ++i) bad += x.ptr[t][i] != before[t][i] * T(0.5);
  EXPECT(bad == 0, "scale: %lld mismatches", (long long)bad);
  const MapOp<T, ClampF<T>> cl{ClampF<T>{T(-0.25), T(0.5)}};
  if (meta.nchunks > 0)
    for (int b = 0; b < grid; ++b)
      for (int t = 0; t < threads; ++t) cl(m, Lane{b, grid, t, threads});
  bad = 0;
  for (size_t t = 0; t < sizes.size(); ++t)
    for (int64_t i = 0; i < sizes[t]; ++i) {
      const T v = before[t][i] * T(0.5);
      bad += x.ptr[t][i] != (v < T(-0.25) ? T(-0.25) : (v > T(0.5) ? T(0.5) : v));
    }
  EXPECT(bad == 0, "clamp: %lld mismatches", (long long)bad);
}

int main() {
  std::mt19937 rng(7);
  std::vector<std::vector<int64_t>> lists = {{0}, {1}, {15}, {16}, {17}, {1000003}, {0, 0, 5, 0}, {70000, 0, 3}};
  std::vector<int64_t> many;
  for (int i = 0; i < 50; ++i) many.push_back(1 + int64_t(rng() % 3000));
  lists.push_back(many);
  std::vector<int64_t> huge_count;
  for (int i = 0; i < 2000; ++i) huge_count.push_back(int64_t(rng() % 40));
  lists.push_back(huge_count);
  SgdHyper sgd; sgd.lr = 0.1; sgd.momentum = 0.9; sgd.nesterov = true; sgd.first_step = false; sgd.weight_decay = 0.01;
  AdamHyper adam; adam.beta1 = 0.9; adam.beta2 = 0.999; adam.step_size = 1e-3; adam.inv_bc2_sqrt = 1.2; adam.eps = 1e-8;
  adam.amsgrad = true; adam.param_scale = 0.999;
  RmspropHyper rms; rms.lr = 1e-2; rms.alpha = 0.99; rms.eps = 1e-8; rms.momentum = 0.5; rms.centered = true;
  AdadeltaHyper ad; ad.lr = 1; ad.rho = 0.9; ad.eps = 1e-6;
  SdpropHyper sd; sd.gamma = 0.99; sd.step_size = 1e-3; sd.eps = 1e-8;
  int seed = 1;
  for (int am = 0; am < 2; ++am)
  for (auto& sizes : lists) {
    g_aligned = am == 0;
    for (int sm : {1, 108, 132}) {
      const int threads = sizes.size() > 100 || sm == 1 ? 64 : 256;
      check_rule<float, SgdRule, SgdHyper, 1>("sgd", sgd, sizes, sm, threads, seed++, false);
      check_rule<double, SgdRule, SgdHyper, 1>("sgd", sgd, sizes, sm, threads, seed++, false);
      check_rule<float, AdamRule, AdamHyper, 3>("adam", adam, sizes, sm, threads, seed++, false);
      check_rule<double, AdamRule, AdamHyper, 3>("adam", adam, sizes, sm, threads, seed++, false);
      check_rule<float, RmspropRule, RmspropHyper, 3>("rmsprop_no_mom", [&] { auto r = rms; r.momentum = 0; return r; }(), sizes, sm, threads, seed++, true);
      check_rule<float, AdadeltaRule, AdadeltaHyper, 2>("adadelta", ad, sizes, sm, threads, seed++, false);
      check_rule<float, SdpropRule, SdpropHyper, 2>("sdprop", sd, sizes, sm, threads, seed++, false);
      check_reduce<float>(sizes, sm, threads, seed++);
      check_reduce<double>(sizes, sm, threads, seed++);
    }
  }
  // meta sizes: which launch tier each list takes
  for (auto& sizes : lists) {
    std::vector<int64_t> offs{0};
    for (int64_t n : sizes) offs.push_back(offs.back() + n);
    std::vector<void*> nul(sizes.size(), nullptr);
    FlatList l; l.count = int64_t(sizes.size()); l.offsets = offs.data();
    ListMeta m5, m1;
    // pointers only checked for non-null when n > 0: use a fake non-null pointer
    std::vector<void*> fake(sizes.size(), reinterpret_cast<void*>(uintptr_t(4096)));
    for (int s = 0; s < 5; ++s) l.stream[s] = fake.data();
    build_meta(l, 5, 1056, m5, "t");
    build_meta(l, 1, 1056, m1, "t");
    std::printf("list of %zu tensors: table %zu B (5 streams), %zu B (1 stream), %d chunks (log2 %d)\n", sizes.size(),
                m5.bytes.size(), m1.bytes.size(), m5.nchunks, MetaView(m5.bytes.data()).chunk_log2);
  }
  std::printf("%s (%d failures)\n", failures ? "FAILED" : "all passed", failures);
  return failures ? 1 : 0;
}
