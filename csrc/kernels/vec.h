// Minimal SIMD vector types used by the element-wise kernels.  One header,
// three widths: the translation unit's compiler flags decide which exist.
// All types live in the per-ISA namespace (see core/macros.h).
#pragma once
#include <cmath>
#include <cstdint>
#if (defined(__AVX2__) || defined(__AVX512F__)) && !defined(__CUDACC__)
#include <immintrin.h>
#endif
#include "core/macros.h"

namespace fl {
namespace FL_ISA_NS {

// ---- scalar "vectors": plain float / double -------------------------------
FL_HD float vsqrt(float x) { return std::sqrt(x); }
FL_HD double vsqrt(double x) { return std::sqrt(x); }
FL_HD float vmax(float a, float b) { return a > b ? a : b; }
FL_HD double vmax(double a, double b) { return a > b ? a : b; }
FL_HD float vabs(float x) { return std::fabs(x); }
FL_HD double vabs(double x) { return std::fabs(x); }
FL_HD float vmin(float a, float b) { return a < b ? a : b; }
FL_HD double vmin(double a, double b) { return a < b ? a : b; }
// Three-way select on the sign of x: pos where x > 0, neg where x < 0, zero
// otherwise (x == 0 or NaN).
FL_HD float vsign_select(float x, float pos, float neg, float zero) {
  return x > 0.0f ? pos : (x < 0.0f ? neg : zero);
}
FL_HD double vsign_select(double x, double pos, double neg, double zero) {
  return x > 0.0 ? pos : (x < 0.0 ? neg : zero);
}

template <class T> struct ScalarOps {
  using V = T;
  static constexpr int width = 1;
  static FL_HD T load(const T* p) { return *p; }
  static FL_HD void store(T* p, T v) { *p = v; }
  static FL_HD T set1(double x) { return static_cast<T>(x); }
};

#if defined(__AVX2__) && !defined(__AVX512F__) && !defined(__CUDACC__)
struct V8 {
  __m256 v;
  FL_HD V8() = default;
  FL_HD V8(__m256 x) : v(x) {}
  FL_HD V8(float x) : v(_mm256_set1_ps(x)) {}
};
FL_HD V8 operator+(V8 a, V8 b) { return _mm256_add_ps(a.v, b.v); }
FL_HD V8 operator-(V8 a, V8 b) { return _mm256_sub_ps(a.v, b.v); }
FL_HD V8 operator*(V8 a, V8 b) { return _mm256_mul_ps(a.v, b.v); }
FL_HD V8 operator/(V8 a, V8 b) { return _mm256_div_ps(a.v, b.v); }
FL_HD V8 operator-(V8 a) { return _mm256_xor_ps(a.v, _mm256_set1_ps(-0.0f)); }
FL_HD V8 vsqrt(V8 a) { return _mm256_sqrt_ps(a.v); }
FL_HD V8 vmax(V8 a, V8 b) { return _mm256_max_ps(a.v, b.v); }
FL_HD V8 vabs(V8 a) { return _mm256_andnot_ps(_mm256_set1_ps(-0.0f), a.v); }
FL_HD V8 vmin(V8 a, V8 b) { return _mm256_min_ps(a.v, b.v); }
FL_HD V8 vsign_select(V8 x, V8 pos, V8 neg, V8 zero) {
  const __m256 z = _mm256_setzero_ps();
  __m256 r = _mm256_blendv_ps(zero.v, pos.v, _mm256_cmp_ps(x.v, z, _CMP_GT_OQ));
  return _mm256_blendv_ps(r, neg.v, _mm256_cmp_ps(x.v, z, _CMP_LT_OQ));
}
struct SimdOps {
  using V = V8;
  static constexpr int width = 8;
  static FL_HD V8 load(const float* p) { return _mm256_loadu_ps(p); }
  static FL_HD void store(float* p, V8 x) { _mm256_storeu_ps(p, x.v); }
  static FL_HD V8 set1(double x) { return V8(static_cast<float>(x)); }
  static FL_HD float hsum(V8 x) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(x.v), _mm256_extractf128_ps(x.v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
    return _mm_cvtss_f32(s);
  }
  static FL_HD float hmax(V8 x) {
    __m128 s = _mm_max_ps(_mm256_castps256_ps128(x.v), _mm256_extractf128_ps(x.v, 1));
    s = _mm_max_ps(s, _mm_movehl_ps(s, s));
    s = _mm_max_ss(s, _mm_shuffle_ps(s, s, 1));
    return _mm_cvtss_f32(s);
  }
};
#define FL_HAVE_SIMD 1
#endif

#if defined(__AVX512F__) && !defined(__CUDACC__)
struct V16 {
  __m512 v;
  FL_HD V16() = default;
  FL_HD V16(__m512 x) : v(x) {}
  FL_HD V16(float x) : v(_mm512_set1_ps(x)) {}
};
FL_HD V16 operator+(V16 a, V16 b) { return _mm512_add_ps(a.v, b.v); }
FL_HD V16 operator-(V16 a, V16 b) { return _mm512_sub_ps(a.v, b.v); }
FL_HD V16 operator*(V16 a, V16 b) { return _mm512_mul_ps(a.v, b.v); }
FL_HD V16 operator/(V16 a, V16 b) { return _mm512_div_ps(a.v, b.v); }
FL_HD V16 operator-(V16 a) {
  return _mm512_castsi512_ps(_mm512_xor_si512(_mm512_castps_si512(a.v), _mm512_set1_epi32(INT32_MIN)));
}
FL_HD V16 vsqrt(V16 a) { return _mm512_sqrt_ps(a.v); }
FL_HD V16 vmax(V16 a, V16 b) { return _mm512_max_ps(a.v, b.v); }
FL_HD V16 vabs(V16 a) { return _mm512_abs_ps(a.v); }
FL_HD V16 vmin(V16 a, V16 b) { return _mm512_min_ps(a.v, b.v); }
FL_HD V16 vsign_select(V16 x, V16 pos, V16 neg, V16 zero) {
  const __m512 z = _mm512_setzero_ps();
  __m512 r = _mm512_mask_blend_ps(_mm512_cmp_ps_mask(x.v, z, _CMP_GT_OQ), zero.v, pos.v);
  return _mm512_mask_blend_ps(_mm512_cmp_ps_mask(x.v, z, _CMP_LT_OQ), r, neg.v);
}
struct SimdOps {
  using V = V16;
  static constexpr int width = 16;
  static FL_HD V16 load(const float* p) { return _mm512_loadu_ps(p); }
  static FL_HD void store(float* p, V16 x) { _mm512_storeu_ps(p, x.v); }
  static FL_HD V16 set1(double x) { return V16(static_cast<float>(x)); }
  static FL_HD float hsum(V16 x) { return _mm512_reduce_add_ps(x.v); }
  static FL_HD float hmax(V16 x) { return _mm512_reduce_max_ps(x.v); }
};
#define FL_HAVE_SIMD 1
#endif

}  // namespace FL_ISA_NS
}  // namespace fl
