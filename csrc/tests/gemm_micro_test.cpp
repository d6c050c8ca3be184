// The SGEMM micro-kernel of one ISA build, and the tile around it, against a
// float64 reference.  Compiled once per ISA with that build's flags and
// namespace (csrc/tests/CMakeLists.txt), so it exercises exactly the code the
// library runs at that ISA.  Exit status: 0 pass, 1 failure, 77 skipped (this
// CPU lacks the ISA).
//
// 1. MicroKernel::run_m: every row count 1..MR, several depths, beta in
//    {0, 1, other} (beta == 0 with NaN in C: C must not be read), the
//    micro-kernel's own epilogues (none, bias, ReLU, bias + ReLU), C with a
//    leading dimension past NR; nothing outside the R x NR tile is written.
// 2. run_tile (cpu/gemm/gemm_tile.h): every row count 1..MR and every column
//    count 1..NR (short tiles go through the tile buffer), beta in {0, 1,
//    other}, every epilogue: activation {identity, relu, tanh, sigmoid} x bias
//    {none, per column, per row} x pre-activation {no, yes}, on the last KC
//    block and (no epilogue) on an earlier one.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <vector>

#include "cpu/gemm/gemm_tile.h"

namespace {

using fl::Activation;
using fl::BiasAxis;
using fl::GemmArgs;
using UK = fl::FL_ISA_NS::MicroKernel;
constexpr int MR = UK::MR, NR = UK::NR;
constexpr float kSentinel = -12345.0f;

bool cpu_has_isa() {
#if defined(__AVX512F__)
  return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
         __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq") &&
         __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#elif defined(__AVX2__)
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
  return true;
#endif
}

// 64-byte aligned floats (the packed panels must be: the kernels load B aligned).
struct Aligned {
  float* p = nullptr;
  explicit Aligned(size_t n) {
    const size_t bytes = (n * sizeof(float) + 63) / 64 * 64;
    p = static_cast<float*>(std::aligned_alloc(64, bytes ? bytes : 64));
  }
  ~Aligned() { std::free(p); }
  Aligned(const Aligned&) = delete;
  Aligned& operator=(const Aligned&) = delete;
};

uint64_t g_rng = 0x9E3779B97F4A7C15ull;
float uniform() {  // [-1, 1)
  g_rng ^= g_rng << 13;
  g_rng ^= g_rng >> 7;
  g_rng ^= g_rng << 17;
  return float(double(g_rng >> 40) / double(1ull << 23) - 1.0);
}

double act_ref(Activation a, double v) {
  switch (a) {
    case Activation::relu: return v > 0.0 ? v : 0.0;
    case Activation::tanh: return std::tanh(v);
    case Activation::sigmoid: return 1.0 / (1.0 + std::exp(-v));
    case Activation::identity: break;
  }
  return v;
}

const char* act_name(Activation a) {
  switch (a) {
    case Activation::relu: return "relu";
    case Activation::tanh: return "tanh";
    case Activation::sigmoid: return "sigmoid";
    case Activation::identity: break;
  }
  return "identity";
}

int g_checks = 0, g_failures = 0;

// |got - want| <= 1e-5 * scale + 2e-6, scale = the sum of the magnitudes that
// went into want (float rounding grows with it; the fast activations add
// ~1e-7 absolute).
void check(const char* what, double got, double want, double scale, const char* ctx) {
  ++g_checks;
  const double tol = 1e-5 * scale + 2e-6;
  if (!(std::fabs(got - want) <= tol)) {
    if (++g_failures <= 20) std::printf("FAIL %s: got %.9g want %.9g (tol %.3g) %s\n", what, got, want, tol, ctx);
  }
}

// 1. the micro-kernel alone
void test_micro_kernel() {
  const int64_t ldc = NR + 5;  // rows not a multiple of the vector width apart
  for (int64_t kc : {1, 2, 7, 64, 129}) {
    Aligned A(size_t(kc) * MR), B(size_t(kc) * NR);
    for (int64_t i = 0; i < kc * MR; ++i) A.p[i] = uniform();
    for (int64_t i = 0; i < kc * NR; ++i) B.p[i] = uniform();
    std::vector<float> bias(NR);
    for (auto& b : bias) b = uniform();
    for (int rows = 1; rows <= MR; ++rows) {
      for (float beta : {0.0f, 1.0f, -0.75f}) {
        for (int epi = 0; epi < 4; ++epi) {
          const bool with_bias = epi & 1, relu = epi & 2;
          const float alpha = epi == 0 ? 1.0f : 1.5f;
          std::vector<float> C((MR + 1) * ldc, kSentinel), C0;
          for (int i = 0; i < rows; ++i)
            for (int j = 0; j < NR; ++j)
              C[i * ldc + j] = beta == 0.0f ? std::numeric_limits<float>::quiet_NaN() : uniform();
          C0 = C;
          fl::FL_ISA_NS::TileEpilogue ep;
          ep.bias_col = with_bias ? bias.data() : nullptr;
          ep.relu = relu;
          if (epi == 0)
            UK::run_m(rows, kc, A.p, B.p, C.data(), ldc, alpha, beta);  // the default (no epilogue)
          else
            UK::run_m(rows, kc, A.p, B.p, C.data(), ldc, alpha, beta, ep);
          char ctx[160];
          std::snprintf(ctx, sizeof ctx, "[micro rows=%d kc=%lld beta=%g bias=%d relu=%d]", rows, (long long)kc,
                        beta, int(with_bias), int(relu));
          for (int i = 0; i <= MR; ++i) {
            for (int64_t j = 0; j < ldc; ++j) {
              const double got = C[i * ldc + j];
              if (i >= rows || j >= NR) {  // outside the tile: untouched
                check("outside the tile", got, kSentinel, 0.0, ctx);
                continue;
              }
              double ab = 0.0, mag = 0.0;
              for (int64_t k = 0; k < kc; ++k) {
                ab += double(A.p[k * MR + i]) * double(B.p[k * NR + j]);
                mag += std::fabs(double(A.p[k * MR + i]) * double(B.p[k * NR + j]));
              }
              double want = alpha * ab;
              mag = std::fabs(alpha) * mag;
              if (beta != 0.0f) {
                want += double(beta) * double(C0[i * ldc + j]);
                mag += std::fabs(double(beta) * double(C0[i * ldc + j]));
              }
              if (with_bias) {
                want += bias[j];
                mag += std::fabs(bias[j]);
              }
              if (relu) want = want > 0.0 ? want : 0.0;
              check("micro-kernel", got, want, mag, ctx);
            }
          }
        }
      }
    }
  }
}

// 2. one tile as the drivers run it, with every epilogue
void test_tile() {
  const int64_t ldc = NR + 3, ldp = NR + 9;
  const Activation acts[] = {Activation::identity, Activation::relu, Activation::tanh, Activation::sigmoid};
  const BiasAxis axes[] = {BiasAxis::none, BiasAxis::per_col, BiasAxis::per_row};
  alignas(64) float tile[MR * NR];
  for (int64_t kc : {3, 40}) {
    Aligned A(size_t(kc) * MR), B(size_t(kc) * NR);
    for (int64_t i = 0; i < kc * MR; ++i) A.p[i] = uniform();
    for (int64_t i = 0; i < kc * NR; ++i) B.p[i] = uniform();
    std::vector<float> bias(std::max(MR, NR));
    for (auto& b : bias) b = uniform();
    for (int mr = 1; mr <= MR; ++mr) {
      for (int nr = 1; nr <= NR; ++nr) {
        for (float beta : {0.0f, 1.0f, 0.5f}) {
          for (Activation act : acts) {
            for (BiasAxis axis : axes) {
              for (int pre = 0; pre < 2; ++pre) {
                for (int last = 1; last >= 0; --last) {
                  if (!last && (act != Activation::tanh || axis != BiasAxis::per_col)) continue;  // one is enough
                  std::vector<float> C((MR + 1) * ldc, kSentinel), P((MR + 1) * ldp, kSentinel);
                  for (int i = 0; i < mr; ++i)
                    for (int j = 0; j < nr; ++j)
                      C[i * ldc + j] = beta == 0.0f ? std::numeric_limits<float>::quiet_NaN() : uniform();
                  const std::vector<float> C0 = C;
                  GemmArgs<float> g;
                  g.M = mr;
                  g.N = nr;
                  g.K = kc;
                  g.alpha = 0.8f;
                  g.beta = beta;
                  g.C = C.data();
                  g.ldc = ldc;
                  g.bias = axis == BiasAxis::none ? nullptr : bias.data();
                  g.bias_axis = axis;
                  g.act = act;
                  g.preact = pre ? P.data() : nullptr;
                  g.ld_preact = ldp;
                  const fl::FL_ISA_NS::EpilogueFn<float> epi = fl::FL_ISA_NS::pick_epilogue(g);
                  fl::FL_ISA_NS::run_tile(g, epi, A.p, B.p, kc, 0, 0, mr, nr, beta, bool(last), tile);
                  char ctx[200];
                  std::snprintf(ctx, sizeof ctx, "[tile mr=%d nr=%d kc=%lld beta=%g act=%s bias=%d pre=%d last=%d]",
                                mr, nr, (long long)kc, beta, act_name(act), int(axis), pre, last);
                  for (int i = 0; i <= MR; ++i) {
                    for (int64_t j = 0; j < ldc; ++j) {
                      const double got = C[i * ldc + j];
                      if (i >= mr || j >= nr) {
                        check("outside the tile", got, kSentinel, 0.0, ctx);
                        continue;
                      }
                      double ab = 0.0, mag = 0.0;
                      for (int64_t k = 0; k < kc; ++k) {
                        const double t = double(A.p[k * MR + i]) * double(B.p[k * NR + j]);
                        ab += t;
                        mag += std::fabs(t);
                      }
                      double v = g.alpha * ab;
                      mag *= g.alpha;
                      if (beta != 0.0f) {
                        v += double(beta) * double(C0[i * ldc + j]);
                        mag += std::fabs(double(beta) * double(C0[i * ldc + j]));
                      }
                      if (last && axis != BiasAxis::none) {
                        const double b = axis == BiasAxis::per_col ? bias[j] : bias[i];
                        v += b;
                        mag += std::fabs(b);
                      }
                      const double want = last ? act_ref(act, v) : v;
                      check("tile C", got, want, mag, ctx);
                      if (pre && last) check("tile preact", P[i * ldp + j], v, mag, ctx);
                    }
                  }
                  if (pre) {  // the pre-activation written exactly inside the tile, and only on the last block
                    for (int i = 0; i <= MR; ++i)
                      for (int64_t j = 0; j < ldp; ++j)
                        if (i >= mr || j >= nr || !last) check("preact outside", P[i * ldp + j], kSentinel, 0.0, ctx);
                  }
                }
              }
            }
          }
        }
      }
    }
  }
}

}  // namespace

int main() {
  std::printf("gemm micro-kernel test, build %s: MR x NR = %d x %d\n", FL_ISA_NAME, MR, NR);
  if (!cpu_has_isa()) {
    std::printf("SKIP: this CPU lacks the %s instructions\n", FL_ISA_NAME);
    return 77;
  }
  test_micro_kernel();
  test_tile();
  std::printf("%d checks, %d failures\n", g_checks, g_failures);
  return g_failures == 0 ? 0 : 1;
}
