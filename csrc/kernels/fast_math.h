// exp, sigmoid and tanh written once for every value type: float, double, the
// AVX2 V8 and AVX-512 V16 vectors of kernels/vec.h, and a CUDA thread's float.
// The GEMM epilogue, the LSTM / GRU cells and every convolution path apply
// their activations through these, so one activation rounds the same way
// whichever kernel computed its input.
#pragma once
#include <cmath>
#include <cstdint>
#include <cstring>

#include "core/macros.h"
#include "kernels/vec.h"

namespace fl {
namespace FL_ISA_NS {

// float: e^x by range reduction (x = n ln2 + r, |r| <= ln2/2) and a degree-6
// polynomial (relative error ~2e-7), the same on every float path so all ISA
// builds agree to rounding; double: libm (the reference precision).
namespace fastmath {
constexpr float kLog2e = 1.44269504088896341f;
constexpr float kLn2Hi = 0.693359375f;
constexpr float kLn2Lo = -2.12194440e-4f;
constexpr float kP[6] = {1.3981999507e-3f, 8.3334519073e-3f, 4.1665795894e-2f,
                         1.6666665459e-1f, 5.0000001201e-1f, 1.0f};
}  // namespace fastmath

#if defined(__CUDACC__)
FL_HD float fast_exp(float x) { return expf(x); }
FL_HD double fast_exp(double x) { return exp(x); }
FL_HD double fast_tanh(double x) { return tanh(x); }
#else
FL_HD float fast_exp(float x) {
  using namespace fastmath;
  x = x < -87.0f ? -87.0f : (x > 88.0f ? 88.0f : x);
  const float n = std::floor(x * kLog2e + 0.5f);
  const float r = (x - n * kLn2Hi) - n * kLn2Lo;
  float p = kP[0];
  for (int k = 1; k < 5; ++k) p = p * r + kP[k];
  p = p * r * r + r + 1.0f;
  const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
  float s;
  std::memcpy(&s, &bits, sizeof s);
  return p * s;
}
FL_HD double fast_exp(double x) { return std::exp(x); }
FL_HD double fast_tanh(double x) { return std::tanh(x); }
#endif

#if defined(__AVX2__) && !defined(__AVX512F__) && !defined(__CUDACC__)
FL_HD V8 fast_exp(V8 xv) {
  using namespace fastmath;
  __m256 x = _mm256_min_ps(_mm256_max_ps(xv.v, _mm256_set1_ps(-87.0f)), _mm256_set1_ps(88.0f));
  const __m256 n = _mm256_floor_ps(_mm256_fmadd_ps(x, _mm256_set1_ps(kLog2e), _mm256_set1_ps(0.5f)));
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(kLn2Hi), x);
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(kLn2Lo), r);
  __m256 p = _mm256_set1_ps(kP[0]);
  for (int k = 1; k < 5; ++k) p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(kP[k]));
  p = _mm256_fmadd_ps(_mm256_mul_ps(p, r), r, _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
  const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  return _mm256_mul_ps(p, _mm256_castsi256_ps(e));
}
#endif
#if defined(__AVX512F__) && !defined(__CUDACC__)
FL_HD V16 fast_exp(V16 xv) {
  using namespace fastmath;
  __m512 x = _mm512_min_ps(_mm512_max_ps(xv.v, _mm512_set1_ps(-87.0f)), _mm512_set1_ps(88.0f));
  const __m512 n = _mm512_roundscale_ps(_mm512_fmadd_ps(x, _mm512_set1_ps(kLog2e), _mm512_set1_ps(0.5f)),
                                        _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(kLn2Hi), x);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(kLn2Lo), r);
  __m512 p = _mm512_set1_ps(kP[0]);
  for (int k = 1; k < 5; ++k) p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(kP[k]));
  p = _mm512_fmadd_ps(_mm512_mul_ps(p, r), r, _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
  const __m512i e = _mm512_slli_epi32(_mm512_add_epi32(_mm512_cvtps_epi32(n), _mm512_set1_epi32(127)), 23);
  return _mm512_mul_ps(p, _mm512_castsi512_ps(e));
}
#endif

// s(x) = 1 / (1 + e^-x);  tanh(x) = 2 s(2x) - 1 (absolute error ~1e-7 in float)
template <class V> FL_HD V fast_sigmoid(V x) { return V(1.0f) / (V(1.0f) + fast_exp(-x)); }
template <> FL_HD double fast_sigmoid<double>(double x) { return 1.0 / (1.0 + fast_exp(-x)); }
template <class V> FL_HD V fast_tanh(V x) { return V(2.0f) / (V(1.0f) + fast_exp(x * V(-2.0f))) - V(1.0f); }

}  // namespace FL_ISA_NS
}  // namespace fl
