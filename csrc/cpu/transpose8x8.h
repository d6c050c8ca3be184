// The 8 x 8 float transpose (AVX2, also used by the AVX-512 builds), shared by the
// GEMM's packing (cpu/gemm) and the convolutions' layout changes (cpu/conv).
// Included by translation units compiled once per ISA: lives in FL_ISA_NS.
#pragma once
#include <cstdint>
#if defined(__AVX2__)
#include <immintrin.h>
#endif
#include "core/macros.h"

namespace fl {
namespace FL_ISA_NS {

#if defined(__AVX2__)
// Eight rows of 8 floats (row[r][k + c]) written transposed, dst[c * dstride + r],
// stored in increasing c.
inline void transpose8x8(const float* const* row, int64_t k, float* dst, int64_t dstride) {
  const __m256 r0 = _mm256_loadu_ps(row[0] + k), r1 = _mm256_loadu_ps(row[1] + k);
  const __m256 r2 = _mm256_loadu_ps(row[2] + k), r3 = _mm256_loadu_ps(row[3] + k);
  const __m256 r4 = _mm256_loadu_ps(row[4] + k), r5 = _mm256_loadu_ps(row[5] + k);
  const __m256 r6 = _mm256_loadu_ps(row[6] + k), r7 = _mm256_loadu_ps(row[7] + k);
  // interleave pairs of rows, then pairs of pairs: s_k holds columns k and k+4 of 4 rows
  const __m256 t0 = _mm256_unpacklo_ps(r0, r1), t1 = _mm256_unpackhi_ps(r0, r1);
  const __m256 t2 = _mm256_unpacklo_ps(r2, r3), t3 = _mm256_unpackhi_ps(r2, r3);
  const __m256 t4 = _mm256_unpacklo_ps(r4, r5), t5 = _mm256_unpackhi_ps(r4, r5);
  const __m256 t6 = _mm256_unpacklo_ps(r6, r7), t7 = _mm256_unpackhi_ps(r6, r7);
  const __m256 s0 = _mm256_shuffle_ps(t0, t2, 0x44), s1 = _mm256_shuffle_ps(t0, t2, 0xEE);
  const __m256 s2 = _mm256_shuffle_ps(t1, t3, 0x44), s3 = _mm256_shuffle_ps(t1, t3, 0xEE);
  const __m256 s4 = _mm256_shuffle_ps(t4, t6, 0x44), s5 = _mm256_shuffle_ps(t4, t6, 0xEE);
  const __m256 s6 = _mm256_shuffle_ps(t5, t7, 0x44), s7 = _mm256_shuffle_ps(t5, t7, 0xEE);
  _mm256_storeu_ps(dst + 0 * dstride, _mm256_permute2f128_ps(s0, s4, 0x20));
  _mm256_storeu_ps(dst + 1 * dstride, _mm256_permute2f128_ps(s1, s5, 0x20));
  _mm256_storeu_ps(dst + 2 * dstride, _mm256_permute2f128_ps(s2, s6, 0x20));
  _mm256_storeu_ps(dst + 3 * dstride, _mm256_permute2f128_ps(s3, s7, 0x20));
  _mm256_storeu_ps(dst + 4 * dstride, _mm256_permute2f128_ps(s0, s4, 0x31));
  _mm256_storeu_ps(dst + 5 * dstride, _mm256_permute2f128_ps(s1, s5, 0x31));
  _mm256_storeu_ps(dst + 6 * dstride, _mm256_permute2f128_ps(s2, s6, 0x31));
  _mm256_storeu_ps(dst + 7 * dstride, _mm256_permute2f128_ps(s3, s7, 0x31));
}

// The same for eight rows lds floats apart: dst[c * ldd + r] = src[r * lds + c].
inline void transpose8x8_strided(const float* src, int64_t lds, float* dst, int64_t ldd) {
  const float* rows[8];
  for (int i = 0; i < 8; ++i) rows[i] = src + i * lds;
  transpose8x8(rows, 0, dst, ldd);
}
#endif

}  // namespace FL_ISA_NS
}  // namespace fl
