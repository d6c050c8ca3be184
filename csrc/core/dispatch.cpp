#include "core/dispatch.h"

#include <atomic>
#include <cstdlib>
#include <mutex>

#include "core/errors.h"
#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#endif
#if defined(__linux__)
#include <sys/syscall.h>
#include <unistd.h>
#endif
#ifdef _OPENMP
#include <omp.h>
#endif

namespace fl {
namespace {

bool cpu_has_avx2() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
  return false;
#endif
}

bool cpu_has_avx512() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
         __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq") && cpu_has_avx2();
#else
  return false;
#endif
}

#if defined(__x86_64__) || defined(__i386__)
// CPUID leaf 7 (sub-leaf `sub`): the structured extended feature flags.
void cpuid7(unsigned sub, unsigned r[4]) {
  r[0] = r[1] = r[2] = r[3] = 0;
  unsigned max_leaf = __get_cpuid_max(0, nullptr);
  if (max_leaf >= 7) __cpuid_count(7, sub, r[0], r[1], r[2], r[3]);
}
// XCR0: which register states the OS saves (bit 17 XTILECFG, 18 XTILEDATA).
unsigned long long read_xcr0() {
  unsigned a, b, c, d;
  if (!__get_cpuid(1, &a, &b, &c, &d) || !(c & (1u << 27))) return 0;  // no OSXSAVE
  unsigned lo, hi;
  __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
  return (static_cast<unsigned long long>(hi) << 32) | lo;
}
#endif

// Linux hands out the (8 KiB) tile data state only to processes that ask:
// arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA), then ARCH_GET_XCOMP_PERM
// confirms the bit.  Asked once per process, before any tile instruction.
bool request_tile_permission() {
#if defined(__linux__) && (defined(__x86_64__) || defined(__i386__)) && defined(SYS_arch_prctl)
  constexpr long kGetPerm = 0x1022, kReqPerm = 0x1023, kXtiledata = 18;
  if (syscall(SYS_arch_prctl, kReqPerm, kXtiledata) != 0) return false;
  unsigned long long mask = 0;
  if (syscall(SYS_arch_prctl, kGetPerm, &mask) != 0) return false;
  return (mask >> kXtiledata) & 1ull;
#else
  return false;
#endif
}

const CpuKernels* table_for(const std::string& name) {
  if (name == "scalar") return &isa_scalar::kernels();
#ifdef FL_BUILD_AVX2
  if (name == "avx2") return &isa_avx2::kernels();
#endif
#ifdef FL_BUILD_AVX512
  if (name == "avx512") return &isa_avx512::kernels();
#endif
  return nullptr;
}

std::atomic<const CpuKernels*> g_selected{nullptr};
std::once_flag g_init;

void init_selection() {
  const auto& isas = available_isas();
  std::string choice = isas.back();
  if (const char* env = std::getenv("FUSEDLEARN_ISA")) {
    std::string want(env);
    bool ok = false;
    for (const auto& s : isas) ok = ok || s == want;
    // An unknown or unsupported level falls back to the best one; the Python
    // package warns about it at import.
    if (ok) choice = want;
  }
  g_selected.store(table_for(choice));
}

}  // namespace

const std::vector<std::string>& available_isas() {
  static const std::vector<std::string> isas = [] {
    std::vector<std::string> v{"scalar"};
#ifdef FL_BUILD_AVX2
    if (cpu_has_avx2()) v.push_back("avx2");
#endif
#ifdef FL_BUILD_AVX512
    if (cpu_has_avx512()) v.push_back("avx512");
#endif
    return v;
  }();
  return isas;
}

const MatrixFeatures& matrix_features() {
  static const MatrixFeatures f = [] {
    MatrixFeatures m;
#if defined(__x86_64__) || defined(__i386__)
    unsigned r0[4], r1[4];
    cpuid7(0, r0);
    cpuid7(1, r1);
    m.avx512_bf16 = cpu_has_avx512() && (r1[0] & (1u << 5));
    m.amx_bf16 = r0[3] & (1u << 22);
    m.amx_tile = r0[3] & (1u << 24);
    const unsigned long long tiles = (1ull << 17) | (1ull << 18);
    m.os_tile_state = m.amx_tile && (read_xcr0() & tiles) == tiles;
    m.tile_permission = m.os_tile_state && request_tile_permission();
#endif
    return m;
  }();
  return f;
}

const CpuKernels& cpu_kernels() {
  std::call_once(g_init, init_selection);
  return *g_selected.load(std::memory_order_relaxed);
}

const char* selected_isa() { return cpu_kernels().isa; }

void set_isa(const std::string& name) {
  std::call_once(g_init, init_selection);
  for (const auto& s : available_isas()) {
    if (s == name) {
      g_selected.store(table_for(name));
      return;
    }
  }
  std::string have;
  for (const auto& s : available_isas()) have += (have.empty() ? "" : ", ") + s;
  throw ValueError("isa: '" + name + "' is not available on this CPU/build (available: " + have + ")");
}

namespace {
int default_threads() {
#ifdef _OPENMP
  return omp_get_max_threads();
#else
  return 1;
#endif
}
std::atomic<int> g_threads{0};
}  // namespace

int configured_threads() {
  int n = g_threads.load(std::memory_order_relaxed);
  if (n == 0) {
    n = default_threads();
    g_threads.store(n);
  }
  return n;
}

int num_threads() { return configured_threads(); }

void set_num_threads(int n) {
  if (n < 1) throw ValueError("set_num_threads: n must be >= 1, got " + std::to_string(n));
#ifndef _OPENMP
  n = 1;
#endif
  g_threads.store(n);
}

bool openmp_enabled() {
#ifdef _OPENMP
  return true;
#else
  return false;
#endif
}

}  // namespace fl
