// Host emulation of the CUDA GEMM kernels (no GPU needed): runs the real
// per-thread phases of cuda/gemm/sgemm.cu (load, store to shared, compute,
// epilogue) for every thread of every block on the CPU, with the barriers of
// the kernels between phases, and checks
//   * the result against a float64 reference of act(alpha*op(A)op(B) + beta*C + bias),
//     and preact against the pre-activation,
//   * that nothing outside the M x N sub-matrices of C / preact is written
//     (guard values around and between the rows),
//   * that beta == 0 never reads C (C starts as NaN then),
//   * that running the threads of each phase in reverse order gives the same
//     bits (a read of shared memory that another thread of the same phase
//     writes would make the result depend on the order).
// It picks the kernel variant (transposes, 16-byte paths) with the same plan
// as the launcher.  CUDA source despite the extension (compiled with nvcc as
// CUDA; it has a main(), so it is not one of FL_CUDA_SOURCES).  The ctest
// target cuda_gemm_host_emulation (cmake/cuda_tests.cmake,
// -DFUSEDLEARN_TESTS=ON) builds and runs it; exit status 1 on any failure.
#define FL_ISA_NS isa_cuda
#include "cuda/cuda_runtime.cu"
#include "cuda/gemm/sgemm.cu"

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

using namespace fl;
using namespace fl::isa_cuda;
using namespace fl::isa_cuda::gemm;

static int failures = 0;
static long long cases = 0;
#define EXPECT(c, ...)                                         \
  do {                                                         \
    if (!(c)) {                                                \
      ++failures;                                              \
      std::printf("FAIL %s:%d: ", __FILE__, __LINE__);         \
      std::printf(__VA_ARGS__);                                \
      std::printf("\n");                                       \
    }                                                          \
  } while (0)

// Runs f(t) for every thread, forwards or backwards.
template <class F>
void each_thread(int n, bool reverse, F&& f) {
  if (reverse)
    for (int t = n - 1; t >= 0; --t) f(t);
  else
    for (int t = 0; t < n; ++t) f(t);
}

template <bool TA, bool TB, bool VA, bool VB>
void emu_sgemm(const GemmArgs<float>& g, bool vc, bool reverse) {
  using K = Sgemm<TA, TB, VA, VB>;
  const int64_t gx = (g.N + kBN - 1) / kBN, gy = (g.M + kBM - 1) / kBM;
  std::vector<SgemmThread> th(kSThreads);
  SgemmSmem s;
  for (int64_t by = 0; by < gy; ++by)
    for (int64_t bx = 0; bx < gx; ++bx) {
      // stale shared memory from the previous block, as on a GPU
      const int64_t m0 = by * kBM, n0 = bx * kBN;
      each_thread(kSThreads, reverse, [&](int t) { K::zero(th[t]); });
      const int64_t nk = (g.K + kBK - 1) / kBK;
      if (nk > 0) {
        each_thread(kSThreads, reverse, [&](int t) {
          K::load(th[t], g, t, m0, n0, 0);
          K::store(th[t], s, 0, t);
        });
        for (int64_t kt = 0; kt < nk; ++kt) {  // each iteration ends at a barrier
          const int buf = int(kt & 1);
          const bool more = kt + 1 < nk;
          each_thread(kSThreads, reverse, [&](int t) {
            if (more) K::load(th[t], g, t, m0, n0, (kt + 1) * kBK);
            K::compute(th[t], s, buf, t);
            if (more) K::store(th[t], s, buf ^ 1, t);
          });
        }
      }
      each_thread(kSThreads, reverse, [&](int t) { K::epilogue(th[t], g, t, m0, n0, vc); });
    }
}

template <bool TA, bool TB>
void emu_sgemm_v(const GemmArgs<float>& g, const SgemmPlan& p, bool reverse) {
  if (p.va) {
    if (p.vb) emu_sgemm<TA, TB, true, true>(g, p.vc, reverse);
    else emu_sgemm<TA, TB, true, false>(g, p.vc, reverse);
  } else {
    if (p.vb) emu_sgemm<TA, TB, false, true>(g, p.vc, reverse);
    else emu_sgemm<TA, TB, false, false>(g, p.vc, reverse);
  }
}

template <bool TA, bool TB>
void emu_dgemm_t(const GemmArgs<double>& g, bool reverse) {
  using K = Dgemm<TA, TB>;
  const int64_t gx = (g.N + kDN - 1) / kDN, gy = (g.M + kDM - 1) / kDM;
  std::vector<DgemmThread> th(kDThreads);
  DgemmSmem s;
  for (int64_t by = 0; by < gy; ++by)
    for (int64_t bx = 0; bx < gx; ++bx) {
      const int64_t m0 = by * kDM, n0 = bx * kDN;
      each_thread(kDThreads, reverse, [&](int t) { K::zero(th[t]); });
      for (int64_t k0 = 0; k0 < g.K; k0 += kDK) {
        each_thread(kDThreads, reverse, [&](int t) {
          K::load(th[t], g, t, m0, n0, k0);
          K::store(th[t], s, t);
        });
        each_thread(kDThreads, reverse, [&](int t) { K::compute(th[t], s, t); });
      }
      each_thread(kDThreads, reverse, [&](int t) { K::epilogue(th[t], g, t, m0, n0); });
    }
}

// The launcher's dispatch, with the emulated kernels.
void emulate(GemmArgs<float> g, bool reverse) {
  if (!prepare(g, "emu")) return;
  const SgemmPlan p = sgemm_plan(g);
  if (!g.trans_a && !g.trans_b) emu_sgemm_v<false, false>(g, p, reverse);
  else if (!g.trans_a && g.trans_b) emu_sgemm_v<false, true>(g, p, reverse);
  else if (g.trans_a && !g.trans_b) emu_sgemm_v<true, false>(g, p, reverse);
  else emu_sgemm_v<true, true>(g, p, reverse);
}
void emulate(GemmArgs<double> g, bool reverse) {
  if (!prepare(g, "emu")) return;
  if (!g.trans_a && !g.trans_b) emu_dgemm_t<false, false>(g, reverse);
  else if (!g.trans_a && g.trans_b) emu_dgemm_t<false, true>(g, reverse);
  else if (g.trans_a && !g.trans_b) emu_dgemm_t<true, false>(g, reverse);
  else emu_dgemm_t<true, true>(g, reverse);
}

// A row-major rows x cols matrix with leading dimension ld, starting `off`
// elements into its allocation (off 1 breaks 16-byte alignment), surrounded
// by guard values.
template <class T>
struct Mat {
  std::vector<T> buf;
  int64_t rows = 0, cols = 0, ld = 0, off = 0;
  static constexpr int kGuard = 16;
  static T guard() { return T(-12345.5); }
  void init(int64_t r, int64_t c, int64_t ld_, int64_t off_) {
    rows = r; cols = c; ld = ld_; off = off_;
    buf.assign(size_t(kGuard + off + (r > 0 ? (r - 1) * ld + c : 0) + kGuard + 4), guard());
  }
  T* data() { return buf.data() + kGuard + off; }
  T& at(int64_t i, int64_t j) { return data()[i * ld + j]; }
  bool inside(size_t idx) const {
    const int64_t e = int64_t(idx) - kGuard - off;
    if (e < 0 || rows == 0 || cols == 0) return false;
    const int64_t i = e / ld, j = e % ld;
    return i < rows && j < cols;
  }
  void fill(std::mt19937& rng, double lo, double hi) {
    std::uniform_real_distribution<double> u(lo, hi);
    for (int64_t i = 0; i < rows; ++i)
      for (int64_t j = 0; j < cols; ++j) at(i, j) = T(u(rng));
  }
  void fill_value(T v) {
    for (int64_t i = 0; i < rows; ++i)
      for (int64_t j = 0; j < cols; ++j) at(i, j) = v;
  }
};

double act_ref(Activation a, double x) {
  switch (a) {
    case Activation::relu: return x < 0 ? 0 : x;
    case Activation::tanh: return std::tanh(x);
    case Activation::sigmoid: return 1.0 / (1.0 + std::exp(-x));
    default: return x;
  }
}

struct Case {
  int64_t M, N, K;
  bool ta, tb;
  double alpha, beta;
  BiasAxis bias;
  Activation act;
  bool preact;
  bool aligned;  // all leading dimensions multiples of 4 and 16-byte aligned starts
};

template <class T>
void run_case(const Case& c, std::mt19937& rng) {
  ++cases;
  const T tol = sizeof(T) == 4 ? T(2e-6) : T(1e-14);
  auto pick_ld = [&](int64_t cols) {
    if (c.aligned) return (cols + 3) / 4 * 4 + 4 * int64_t(rng() % 2);
    return cols + int64_t(rng() % 4);
  };
  auto pick_off = [&]() { return c.aligned ? int64_t(0) : int64_t(rng() % 4); };
  Mat<T> A, B, C, P, bias;
  const int64_t ar = c.ta ? c.K : c.M, ac = c.ta ? c.M : c.K;
  const int64_t br = c.tb ? c.N : c.K, bc = c.tb ? c.K : c.N;
  A.init(ar, ac, pick_ld(ac), pick_off());
  B.init(br, bc, pick_ld(bc), pick_off());
  C.init(c.M, c.N, pick_ld(c.N), pick_off());
  P.init(c.M, c.N, pick_ld(c.N), pick_off());
  const int64_t nb = c.bias == BiasAxis::per_row ? c.M : c.N;
  bias.init(1, nb, nb, pick_off());
  A.fill(rng, -1, 1);
  B.fill(rng, -1, 1);
  bias.fill(rng, -1, 1);
  if (c.beta == 0) C.fill_value(std::numeric_limits<T>::quiet_NaN());
  else C.fill(rng, -1, 1);
  P.fill(rng, -1, 1);
  const std::vector<T> c0 = C.buf, p0 = P.buf;

  GemmArgs<T> g;
  g.M = c.M; g.N = c.N; g.K = c.K;
  g.trans_a = c.ta; g.trans_b = c.tb;
  g.alpha = T(c.alpha); g.beta = T(c.beta);
  g.A = A.data(); g.lda = A.ld;
  g.B = B.data(); g.ldb = B.ld;
  g.C = C.data(); g.ldc = C.ld;
  g.bias = c.bias == BiasAxis::none ? nullptr : bias.data();
  g.bias_axis = c.bias;
  g.act = c.act;
  g.preact = c.preact ? P.data() : nullptr;
  g.ld_preact = P.ld;

  emulate(g, false);
  const std::vector<T> c1 = C.buf, p1 = P.buf;
  // again with each phase's threads in reverse order: same bits expected
  C.buf = c0;
  P.buf = p0;
  emulate(g, true);
  EXPECT(std::memcmp(C.buf.data(), c1.data(), c1.size() * sizeof(T)) == 0 &&
             std::memcmp(P.buf.data(), p1.data(), p1.size() * sizeof(T)) == 0,
         "thread order changes the result (M=%lld N=%lld K=%lld ta=%d tb=%d)", (long long)c.M, (long long)c.N,
         (long long)c.K, c.ta, c.tb);

  int64_t bad = 0, guard_bad = 0;
  for (int64_t i = 0; i < c.M; ++i)
    for (int64_t j = 0; j < c.N; ++j) {
      double s = 0, mag = 0;
      for (int64_t k = 0; k < c.K; ++k) {
        const double a = c.ta ? double(A.at(k, i)) : double(A.at(i, k));
        const double b = c.tb ? double(B.at(j, k)) : double(B.at(k, j));
        s += a * b;
        mag += std::fabs(a * b);
      }
      const double old = double(c0[size_t(Mat<T>::kGuard + C.off + i * C.ld + j)]);
      double pre = c.alpha * s;
      mag = std::fabs(c.alpha) * mag;
      if (c.beta != 0) { pre += c.beta * old; mag += std::fabs(c.beta * old); }
      if (c.bias == BiasAxis::per_col) { pre += double(bias.at(0, j)); mag += std::fabs(double(bias.at(0, j))); }
      if (c.bias == BiasAxis::per_row) { pre += double(bias.at(0, i)); mag += std::fabs(double(bias.at(0, i))); }
      const double want = act_ref(c.act, pre);
      const double lim = double(tol) * (mag + 1.0) * (1.0 + std::sqrt(double(c.K)));
      const double e = std::fabs(double(C.at(i, j)) - want);
      if (!(e <= lim)) {
        if (bad++ < 3)
          std::printf("  C(%lld,%lld) = %.9g, want %.9g\n", (long long)i, (long long)j, double(C.at(i, j)), want);
      }
      if (c.preact) {
        const double ep = std::fabs(double(P.at(i, j)) - pre);
        if (!(ep <= lim) && bad++ < 3)
          std::printf("  preact(%lld,%lld) = %.9g, want %.9g\n", (long long)i, (long long)j, double(P.at(i, j)),
                      pre);
      }
    }
  for (size_t idx = 0; idx < C.buf.size(); ++idx)
    if (!C.inside(idx) && std::memcmp(&C.buf[idx], &c0[idx], sizeof(T)) != 0) ++guard_bad;
  for (size_t idx = 0; idx < P.buf.size(); ++idx)
    if ((!c.preact || !P.inside(idx)) && std::memcmp(&P.buf[idx], &p0[idx], sizeof(T)) != 0) ++guard_bad;
  EXPECT(bad == 0 && guard_bad == 0,
         "%s M=%lld N=%lld K=%lld ta=%d tb=%d alpha=%g beta=%g bias=%d act=%d preact=%d aligned=%d: %lld wrong, "
         "%lld writes outside",
         sizeof(T) == 4 ? "f32" : "f64", (long long)c.M, (long long)c.N, (long long)c.K, c.ta, c.tb, c.alpha, c.beta,
         int(c.bias), int(c.act), c.preact, c.aligned, (long long)bad, (long long)guard_bad);
}

int main() {
  std::mt19937 rng(11);
  const int64_t dims[] = {1, 2, 3, 4, 5, 7, 8, 9, 16, 31, 63, 64, 65, 127, 128, 129, 131, 200, 257};
  const int64_t ks[] = {0, 1, 3, 4, 7, 8, 9, 13, 16, 17, 64, 100, 131};
  const double alphas[] = {1.0, -0.75, 0.0};
  const double betas[] = {0.0, 1.0, 0.5};
  auto rnd = [&](int n) { return int(rng() % unsigned(n)); };
  // every transpose x alignment x epilogue, on random shapes
  for (int ta = 0; ta < 2; ++ta)
    for (int tb = 0; tb < 2; ++tb)
      for (int al = 0; al < 2; ++al)
        for (int bias = 0; bias < 3; ++bias)
          for (int act = 0; act < 4; ++act) {
            Case c{dims[rnd(19)], dims[rnd(19)], ks[rnd(13)], bool(ta), bool(tb),
                   alphas[rnd(3)], betas[rnd(3)], BiasAxis(bias), Activation(act), bool(rnd(2)), bool(al)};
            run_case<float>(c, rng);
            run_case<double>(c, rng);
          }
  // edge-tile sweep: sizes around the tile edges, identity epilogue, alpha/beta != trivial
  for (int64_t m : {1, 127, 128, 129})
    for (int64_t n : {1, 4, 5, 127, 128, 131})
      for (int64_t k : {0, 1, 7, 8, 9, 16, 23})
        for (int t = 0; t < 4; ++t)
          for (int al = 0; al < 2; ++al) {
            Case c{m, n, k, bool(t & 1), bool(t & 2), 1.5, al ? 0.0 : -1.0, BiasAxis::per_col, Activation::identity,
                   true, bool(al)};
            run_case<float>(c, rng);
            if (t == 0) run_case<double>(c, rng);
          }
  // larger, several tiles each way
  for (int t = 0; t < 4; ++t) {
    Case c{300, 263, 277, bool(t & 1), bool(t & 2), 1.0, 0.5, BiasAxis::per_row, Activation::tanh, true, t < 2};
    run_case<float>(c, rng);
    run_case<double>(c, rng);
  }
  // empty
  for (int64_t m : {0, 5})
    for (int64_t n : {0, 6}) {
      Case c{m, n, 3, false, false, 1.0, 0.0, BiasAxis::none, Activation::relu, false, true};
      run_case<float>(c, rng);
    }
  std::printf("%lld cases: %s (%d failures)\n", cases, failures ? "FAILED" : "all passed", failures);
  return failures ? 1 : 0;
}
