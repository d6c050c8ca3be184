#include "core/dispatch.h"

#include <atomic>
#include <cstdlib>
#include <mutex>

#include "core/errors.h"
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
