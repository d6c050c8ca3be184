// Microbenchmarks of the fused optimizer steps against the machine's memory
// bandwidth (a STREAM-like triad), with Google Benchmark.
//
//   optim/<rule>/<isa>/nt:<threads>/tensors:<k>[/staggered]
//        one fused step over 16M float32 parameters, split over k tensors
//   triad/<store|stream>/nt:<threads>[/staggered]
//        a[i] = b[i] + s*c[i] on 16M float32, normal or non-temporal stores
//
// Layouts.  Every stream (p, g, each state; a, b, c) is its own 64-byte aligned
// allocation.  Big allocations come straight from mmap, so by default all
// streams start at the same offset within a page, as separate large numpy /
// torch arrays do; that puts every stream's element i in the same cache set and
// DRAM bank at once, which can cost bandwidth.  "/staggered" shifts stream k by
// k * 576 B (STREAM offsets its arrays for the same reason): the triad with
// staggered arrays is the cleaner hardware limit, and adam / sdprop are run
// both ways to show what the layout costs.  200-tensor lists come from the heap
// at assorted offsets.
//
// Every benchmark reports bytes_per_second (SetBytesProcessed, binary units)
// and a "GB/s" counter (decimal, 1e9 B/s), both from the real (wall) time.
// Bytes are the bytes the update must move per element: 4 B for every stream
// read plus 4 B for every stream written (Adam: p, g, m, v read, p, m, v
// written = 28 B).  The triad counts 12 B/element as STREAM does.
//
// FL_BENCH_N (environment) overrides the element count (default 16M = 2^24).
#include <benchmark/benchmark.h>

#include <immintrin.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <new>
#include <string>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "core/dispatch.h"
#include "kernels/kernel_table.h"
#include "kernels/optim_hyper.h"

namespace {

int64_t element_count() {
  static const int64_t n = [] {
    int64_t v = int64_t(1) << 24;
    if (const char* e = std::getenv("FL_BENCH_N")) {
      long long x = std::atoll(e);
      if (x >= 1024) v = x;
    }
    return v;
  }();
  return n;
}

// ---- memory ---------------------------------------------------------------

struct FreeDeleter {
  void operator()(float* p) const { std::free(p); }
};
using FloatBuf = std::unique_ptr<float, FreeDeleter>;

// 64-byte aligned, as numpy's and torch's CPU allocators give (no huge-page advice,
// so the comparison with the Python peers is on equal terms).
FloatBuf alloc_floats(int64_t n) {
  size_t bytes = (size_t(n) * sizeof(float) + 63) & ~size_t(63);
  if (bytes == 0) bytes = 64;
  void* p = std::aligned_alloc(64, bytes);
  if (!p) throw std::bad_alloc();
  return FloatBuf(static_cast<float*>(p));
}

int hw_threads() {
#ifdef _OPENMP
  return omp_get_num_procs();
#else
  return 1;
#endif
}

// Fill x[0, n) with f(i) using every core: the first touch maps the pages, and
// re-filling before each benchmark gives every rule the same starting state.
template <class F>
void fill(float* x, int64_t n, F f) {
#ifdef _OPENMP
#pragma omp parallel for schedule(static) num_threads(hw_threads())
#endif
  for (int64_t i = 0; i < n; ++i) x[i] = f(i);
}

// The 200-tensor layout: sizes proportional to 1 + (37 i mod 101), summing to N
// exactly (bench_optim.py uses the same formula).  Most sizes are not multiples
// of the vector width, so tails are exercised as in a real model.
std::vector<int64_t> split_sizes(int64_t total, int count) {
  std::vector<int64_t> w(count), n(count);
  int64_t wsum = 0;
  for (int i = 0; i < count; ++i) wsum += (w[i] = 1 + (int64_t(i) * 37) % 101);
  int64_t used = 0;
  for (int i = 0; i < count; ++i) {
    n[i] = (i + 1 == count) ? total - used : total * w[i] / wsum;
    used += n[i];
  }
  return n;
}

// Stream k of a staggered layout starts k * kStaggerFloats floats (576 B, nine
// cache lines) into its allocation, so no two streams share a page offset.
constexpr int64_t kStaggerFloats = 144;

// One set of 5 streams (p, g, s0, s1, s2), each split into `count` tensors that
// are separate allocations.
struct Layout {
  int count = 0;
  int64_t total = 0;
  bool staggered = false;
  std::vector<int64_t> offsets;                 // count + 1
  std::array<std::vector<FloatBuf>, fl::kMaxStreams> bufs;
  std::array<std::vector<void*>, fl::kMaxStreams> ptrs;

  Layout(int64_t n, int k, bool stagger) : count(k), total(n), staggered(stagger) {
    std::vector<int64_t> sizes = k == 1 ? std::vector<int64_t>{n} : split_sizes(n, k);
    offsets.assign(k + 1, 0);
    for (int t = 0; t < k; ++t) offsets[t + 1] = offsets[t] + sizes[t];
    for (int s = 0; s < fl::kMaxStreams; ++s) {
      const int64_t shift = stagger ? s * kStaggerFloats : 0;
      for (int t = 0; t < k; ++t) {
        bufs[s].push_back(alloc_floats(sizes[t] + shift));
        ptrs[s].push_back(bufs[s].back().get() + shift);
      }
    }
    reset();
  }

  // Deterministic, finite starting values: parameters near 1, gradients of
  // both signs around 1e-3 (never denormal), states positive (so square roots,
  // amsgrad maxima and Adamax's infinity norm are ordinary numbers).
  void reset() {
    for (int t = 0; t < count; ++t) {
      const int64_t n = offsets[t + 1] - offsets[t], base = offsets[t];
      fill(static_cast<float*>(ptrs[0][t]), n, [base](int64_t i) { return 1.0f + float((base + i) % 13) * 1e-3f; });
      fill(static_cast<float*>(ptrs[1][t]), n,
           [base](int64_t i) { return float(int((base + i) % 17) - 8) * 1e-3f + 1e-4f; });
      for (int s = 2; s < fl::kMaxStreams; ++s)
        fill(static_cast<float*>(ptrs[s][t]), n, [](int64_t) { return 0.01f; });
    }
  }

  fl::FlatList flat(const std::array<bool, fl::kMaxStates>& states) const {
    fl::FlatList f;
    f.count = count;
    f.offsets = offsets.data();
    f.stream[0] = ptrs[0].data();
    f.stream[1] = ptrs[1].data();
    for (int s = 0; s < fl::kMaxStates; ++s) f.stream[2 + s] = states[s] ? ptrs[2 + s].data() : nullptr;
    return f;
  }
};

Layout& layout(int tensors, bool staggered) {
  // Built on first use and kept: the 16M x 5 streams are 320 MB per layout.
  static std::unique_ptr<Layout> one, one_staggered, many;
  auto& slot = tensors != 1 ? many : staggered ? one_staggered : one;
  if (!slot || slot->count != tensors) slot.reset(new Layout(element_count(), tensors, staggered));
  return *slot;
}

// ---- the rules ------------------------------------------------------------

struct Case {
  std::string name;
  fl::RuleId rule;
  std::array<bool, fl::kMaxStates> states;
  std::shared_ptr<const void> hyper;
  int n_states() const { return int(states[0]) + int(states[1]) + int(states[2]); }
  // p and every state are read and written; g is read only.
  int reads() const { return 2 + n_states(); }
  int writes() const { return 1 + n_states(); }
  int bytes_per_elem() const { return 4 * (reads() + writes()); }
};

template <class H>
std::shared_ptr<const void> keep(const H& h) {
  return std::make_shared<H>(h);
}

// Step 2 everywhere: past the first-step special cases (SGD's buffer
// initialisation), which is what a training run spends its time in.
std::vector<Case> make_cases() {
  using namespace fl;
  const int64_t t = 2;
  std::vector<Case> c;
  c.push_back({"sgd", kRule_sgd, {false, false, false}, keep(make_sgd_hyper(t, 0.01, 0.0, 0.0, 0.0, false, false))});
  c.push_back({"sgd_momentum", kRule_sgd, {true, false, false},
               keep(make_sgd_hyper(t, 0.01, 0.9, 0.0, 0.0, false, false))});
  c.push_back({"sgd_nesterov", kRule_sgd, {true, false, false},
               keep(make_sgd_hyper(t, 0.01, 0.9, 0.0, 0.0, true, false))});
  c.push_back({"adagrad", kRule_adagrad, {true, false, false},
               keep(make_adagrad_hyper(t, 0.01, 0.0, 0.0, 1e-10, false))});
  c.push_back({"adadelta", kRule_adadelta, {true, true, false},
               keep(make_adadelta_hyper(1.0, 0.9, 1e-6, 0.0, false))});
  c.push_back({"rmsprop", kRule_rmsprop, {true, false, false},
               keep(make_rmsprop_hyper(0.01, 0.99, 1e-8, 0.0, 0.0, false, false))});
  c.push_back({"rmsprop_centered_momentum", kRule_rmsprop, {true, true, true},
               keep(make_rmsprop_hyper(0.01, 0.99, 1e-8, 0.0, 0.9, true, false))});
  c.push_back({"adam", kRule_adam, {true, true, false},
               keep(make_adam_hyper(t, 1e-3, 0.9, 0.999, 1e-8, 0.0, false, false, false))});
  c.push_back({"adam_amsgrad", kRule_adam, {true, true, true},
               keep(make_adam_hyper(t, 1e-3, 0.9, 0.999, 1e-8, 0.0, true, false, false))});
  c.push_back({"adamw", kRule_adam, {true, true, false},
               keep(make_adam_hyper(t, 1e-3, 0.9, 0.999, 1e-8, 1e-2, false, false, true))});
  c.push_back({"adamax", kRule_adamax, {true, true, false},
               keep(make_adamax_hyper(t, 2e-3, 0.9, 0.999, 1e-8, 0.0, false))});
  c.push_back({"accsgd", kRule_accsgd, {true, false, false},
               keep(make_accsgd_hyper(1e-3, 1000.0, 10.0, 0.7, 0.0, false))});
  c.push_back({"sdprop", kRule_sdprop, {true, true, false},
               keep(make_sdprop_hyper(t, 1e-3, 0.99, 1e-8, 0.0, false))});
  return c;
}

void set_rates(benchmark::State& st, double bytes_per_iter, double elems) {
  const double iters = double(st.iterations());
  st.SetBytesProcessed(int64_t(bytes_per_iter * iters));
  st.counters["GB/s"] = benchmark::Counter(bytes_per_iter * iters / 1e9, benchmark::Counter::kIsRate);
  st.counters["B/elem"] = bytes_per_iter / elems;
}

void bm_optim(benchmark::State& st, const Case* c, std::string isa, int threads, int tensors, bool staggered) {
  fl::set_isa(isa);
  fl::set_num_threads(threads);
  Layout& L = layout(tensors, staggered);
  L.reset();
  const fl::FlatList f = L.flat(c->states);
  const fl::OptimKernel k = fl::cpu_kernels().optim[int(fl::DType::f32)][c->rule];
  const void* h = c->hyper.get();
  for (auto _ : st) {
    k(h, f);
    benchmark::ClobberMemory();
  }
  set_rates(st, double(c->bytes_per_elem()) * double(L.total), double(L.total));
  st.counters["streams_r"] = c->reads();
  st.counters["streams_w"] = c->writes();
}

// ---- STREAM-like triad ------------------------------------------------------

// [lo, hi) are multiples of 16 except hi == n; a scalar tail finishes.
__attribute__((target("avx2"))) void triad_store(float* a, const float* b, const float* c, float s, int64_t lo,
                                                 int64_t hi) {
  const __m256 sv = _mm256_set1_ps(s);
  int64_t i = lo;
  for (; i + 8 <= hi; i += 8)
    _mm256_store_ps(a + i, _mm256_add_ps(_mm256_load_ps(b + i), _mm256_mul_ps(sv, _mm256_load_ps(c + i))));
  for (; i < hi; ++i) a[i] = b[i] + s * c[i];
}

__attribute__((target("avx2"))) void triad_stream(float* a, const float* b, const float* c, float s, int64_t lo,
                                                  int64_t hi) {
  const __m256 sv = _mm256_set1_ps(s);
  int64_t i = lo;
  for (; i + 8 <= hi; i += 8)
    _mm256_stream_ps(a + i, _mm256_add_ps(_mm256_load_ps(b + i), _mm256_mul_ps(sv, _mm256_load_ps(c + i))));
  for (; i < hi; ++i) a[i] = b[i] + s * c[i];
  _mm_sfence();
}

struct TriadData {
  int64_t n;
  FloatBuf buf[3];
  float *a, *b, *c;
  TriadData(int64_t n_, bool stagger) : n(n_) {
    float* p[3];
    for (int k = 0; k < 3; ++k) {
      const int64_t shift = stagger ? k * kStaggerFloats : 0;
      buf[k] = alloc_floats(n + shift);
      p[k] = buf[k].get() + shift;
    }
    a = p[0], b = p[1], c = p[2];
    fill(a, n, [](int64_t) { return 0.0f; });
    fill(b, n, [](int64_t i) { return 1.0f + float(i % 7); });
    fill(c, n, [](int64_t i) { return 2.0f - float(i % 5); });
  }
};

TriadData& triad_data(bool staggered) {
  static TriadData same(element_count(), false), shifted(element_count(), true);
  return staggered ? shifted : same;
}

void bm_triad(benchmark::State& st, bool nontemporal, int threads, bool staggered) {
  TriadData& d = triad_data(staggered);
  float *a = d.a, *b = d.b, *c = d.c;
  const int64_t n = d.n;
  const float s = 3.0f;
  auto body = nontemporal ? triad_stream : triad_store;
  for (auto _ : st) {
#ifdef _OPENMP
#pragma omp parallel num_threads(threads)
    {
      const int t = omp_get_thread_num(), nt = omp_get_num_threads();
      // Same contiguous, 64-byte aligned split as the optimizer kernels.
      auto split = [&](int k) -> int64_t { return k >= nt ? n : (n / nt * k + (n % nt) * k / nt) & ~int64_t(15); };
      body(a, b, c, s, split(t), split(t + 1));
    }
#else
    (void)threads;
    body(a, b, c, s, 0, n);
#endif
    benchmark::DoNotOptimize(a);
    benchmark::ClobberMemory();
  }
  set_rates(st, 12.0 * double(n), double(n));
}

bool cpu_has_avx2() {
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx2");
}

void register_all() {
  static const std::vector<Case> cases = make_cases();
  const std::vector<int> thread_counts{1, 2};
  const auto& isas = fl::available_isas();

  std::string isa_list;
  for (const auto& s : isas) isa_list += (isa_list.empty() ? "" : ",") + s;
  benchmark::AddCustomContext("fl_isas", isa_list);
  benchmark::AddCustomContext("fl_elements", std::to_string(element_count()));
  benchmark::AddCustomContext("fl_openmp", fl::openmp_enabled() ? "yes" : "no");

  auto tune = [](benchmark::internal::Benchmark* b) {
    b->UseRealTime()->Unit(benchmark::kMillisecond);
  };

  if (cpu_has_avx2()) {
    for (bool stag : {false, true}) {
      for (int nt : thread_counts) {
        const std::string tail = "/nt:" + std::to_string(nt) + (stag ? "/staggered" : "");
        tune(benchmark::RegisterBenchmark(("triad/store" + tail).c_str(), bm_triad, false, nt, stag));
        tune(benchmark::RegisterBenchmark(("triad/stream" + tail).c_str(), bm_triad, true, nt, stag));
      }
    }
  } else {
    std::fprintf(stderr, "fl_optim_bench: no AVX2 on this CPU, the triad reference is skipped\n");
  }

  for (const Case& c : cases) {
    for (const auto& isa : isas) {
      for (int nt : thread_counts) {
        const std::string name = "optim/" + c.name + "/" + isa + "/nt:" + std::to_string(nt) + "/tensors:1";
        tune(benchmark::RegisterBenchmark(name.c_str(), bm_optim, &c, isa, nt, 1, false));
      }
    }
  }
  // adam and sdprop: the same single tensor with staggered streams, and the same
  // 16M elements as 200 tensors (separate allocations).
  for (const Case& c : cases) {
    if (c.name != "adam" && c.name != "sdprop") continue;
    for (int tensors : {1, 200}) {
      for (const auto& isa : isas) {
        for (int nt : thread_counts) {
          const std::string name = "optim/" + c.name + "/" + isa + "/nt:" + std::to_string(nt) +
                                   "/tensors:" + std::to_string(tensors) + (tensors == 1 ? "/staggered" : "");
          tune(benchmark::RegisterBenchmark(name.c_str(), bm_optim, &c, isa, nt, tensors, tensors == 1));
        }
      }
    }
  }
}

}  // namespace

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  register_all();
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
