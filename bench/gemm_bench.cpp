// Microbenchmarks of the float32 GEMM (cpu/gemm) with Google Benchmark.
//
//   gemm/<isa>/nt:<threads>/M:<m>/K:<k>/N:<n>[/linear_relu]
//     C = A @ B, row-major, A M x K, B K x N (no transposes), beta = 0;
//     "/linear_relu": C = relu(A @ W^T + bias) with W N x K (torch's Linear
//     layout), the fused epilogue.
//   square sizes 64 ... 2048 and the RNN-like shapes (64,512,2048),
//   (64,1024,4096), (4096,256,256), at 1 and 2 threads, for every ISA build
//   this CPU can run.
//
// Counters: GFLOPS (2*M*N*K / wall time, 1e9 flop/s) and peak_GFLOPS, the
// FP32 peak of the threads used, estimated as
//   threads x 2 FMA pipes x lanes (AVX2 8, AVX-512 16, scalar/SSE 4) x 2 flops x clock,
// with the clock read from /proc/cpuinfo ("cpu MHz" of the first CPU, the
// nominal figure the kernel reports; boost clocks make >100% possible).
// The estimate is printed at start and stored in the JSON context.
// Zen 3 (2 x 256-bit FMA pipes) matches this model; AVX-512 parts with a
// single 512-bit FMA port reach half of it.
#include <benchmark/benchmark.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "core/dispatch.h"
#include "kernels/gemm_args.h"

namespace {

double cpu_mhz() {
  std::ifstream f("/proc/cpuinfo");
  std::string line;
  while (std::getline(f, line)) {
    if (line.rfind("cpu MHz", 0) == 0) {
      const auto colon = line.find(':');
      if (colon != std::string::npos) return std::atof(line.c_str() + colon + 1);
    }
  }
  return 0.0;
}

int lanes(const std::string& isa) { return isa == "avx512" ? 16 : isa == "avx2" ? 8 : 4; }

double peak_gflops(const std::string& isa, int threads) {
  return threads * 2.0 * lanes(isa) * 2.0 * cpu_mhz() / 1000.0;
}

struct Buf {
  float* p;
  explicit Buf(size_t n) : p(static_cast<float*>(std::aligned_alloc(64, (n * 4 + 63) / 64 * 64))) {
    std::mt19937 rng(42);
    std::uniform_real_distribution<float> d(-1.0f, 1.0f);
    for (size_t i = 0; i < n; ++i) p[i] = d(rng);
  }
  ~Buf() { std::free(p); }
  Buf(const Buf&) = delete;
  Buf& operator=(const Buf&) = delete;
};

// prepacked: op(B) packed once beforehand (sgemm_pack_b), as the recurrent
// layers do with W_hh for every time step; the timed call then skips packing B.
void bm_gemm(benchmark::State& st, std::string isa, int threads, int64_t M, int64_t K, int64_t N, bool linear_relu,
             bool prepacked = false) {
  fl::set_isa(isa);
  fl::set_num_threads(threads);
  Buf a{size_t(M * K)}, b{size_t(K * N)}, c{size_t(M * N)}, bias{size_t(N)};
  fl::GemmArgs<float> g;
  g.M = M;
  g.N = N;
  g.K = K;
  g.A = a.p;
  g.lda = K;
  g.B = b.p;
  g.ldb = N;
  g.C = c.p;
  g.ldc = N;
  if (linear_relu) {
    g.trans_b = true;  // W is N x K
    g.ldb = K;
    g.bias = bias.p;
    g.bias_axis = fl::BiasAxis::per_col;
    g.act = fl::Activation::relu;
  }
  const auto kernel = fl::cpu_kernels().sgemm;
  std::unique_ptr<Buf> packed;
  if (prepacked) {
    const int64_t n = fl::cpu_kernels().sgemm_packed_b_size(g);
    if (n <= 0) {
      st.SkipWithError("this shape's driver takes no packed B (M above the row block)");
      return;
    }
    packed.reset(new Buf(size_t(n)));
    fl::cpu_kernels().sgemm_pack_b(g, packed->p);
    g.packed_b = packed->p;
  }
  kernel(g);  // warm: packing buffers, threads
  for (auto _ : st) {
    kernel(g);
    benchmark::ClobberMemory();
  }
  const double flops = 2.0 * double(M) * double(N) * double(K);
  st.counters["GFLOPS"] = benchmark::Counter(flops * double(st.iterations()) / 1e9, benchmark::Counter::kIsRate);
  st.counters["peak_GFLOPS"] = peak_gflops(isa, threads);
}

}  // namespace

int main(int argc, char** argv) {
  const auto& isas = fl::available_isas();
  const double mhz = cpu_mhz();
  std::printf("cpu MHz (/proc/cpuinfo): %.1f\n", mhz);
  for (const auto& isa : isas)
    std::printf("FP32 peak estimate %-6s: %.1f GFLOP/s per thread (2 FMA x %d lanes x 2 flops x %.0f MHz)\n",
                isa.c_str(), peak_gflops(isa, 1), lanes(isa), mhz);
  std::fflush(stdout);
  benchmark::AddCustomContext("cpu_mhz", std::to_string(mhz));
  for (const auto& isa : isas)
    benchmark::AddCustomContext("peak_gflops_1t_" + isa, std::to_string(peak_gflops(isa, 1)));

  struct Shape {
    int64_t m, k, n;
  };
  std::vector<Shape> shapes;
  for (int64_t s : {64, 128, 256, 512, 1024, 2048}) shapes.push_back({s, s, s});
  shapes.push_back({64, 512, 2048});
  shapes.push_back({64, 1024, 4096});
  shapes.push_back({4096, 256, 256});
  const int max_threads = fl::num_threads();
  for (const auto& isa : isas) {
    for (int nt : {1, 2}) {
      if (nt > max_threads && nt > 1 && !fl::openmp_enabled()) continue;
      for (const auto& s : shapes) {
        const std::string name = "gemm/" + isa + "/nt:" + std::to_string(nt) + "/M:" + std::to_string(s.m) +
                                 "/K:" + std::to_string(s.k) + "/N:" + std::to_string(s.n);
        benchmark::RegisterBenchmark(name.c_str(), bm_gemm, isa, nt, s.m, s.k, s.n, false, false)
            ->UseRealTime()
            ->Unit(benchmark::kMillisecond);
        if (s.m == 64 || s.m == 4096)
          benchmark::RegisterBenchmark((name + "/linear_relu").c_str(), bm_gemm, isa, nt, s.m, s.k, s.n, true, false)
              ->UseRealTime()
              ->Unit(benchmark::kMillisecond);
        if (s.m == 64)  // a recurrent step: the weight packed once per sequence
          benchmark::RegisterBenchmark((name + "/prepacked_b").c_str(), bm_gemm, isa, nt, s.m, s.k, s.n, false, true)
              ->UseRealTime()
              ->Unit(benchmark::kMillisecond);
      }
    }
  }
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
