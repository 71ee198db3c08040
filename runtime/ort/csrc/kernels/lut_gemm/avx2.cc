// lut_gemm on AVX2: 8 lookups per vpgatherdd from the int32 table row T(sel, .).
// No int16 restriction (gathers read whole int32 entries). 64 lanes (8 accumulators) per
// tile; K is blocked so the index panel stays in L1.
#include <immintrin.h>

#include <algorithm>

#include "kernels/kernels.h"

namespace axmoe::kernels {
namespace {

constexpr size_t kBlockK = 128;

void Tile(const int32_t* tables, const uint8_t* idx, size_t ldidx, size_t k0, size_t k1,
          const uint8_t* sel, int32_t* out, bool accumulate) {
  __m256i acc[8];
  for (int v = 0; v < 8; ++v) acc[v] = _mm256_setzero_si256();
  for (size_t k = k0; k < k1; ++k) {
    const int* row = reinterpret_cast<const int*>(tables + size_t(sel[k]) * 256);
    const uint8_t* x = idx + k * ldidx;
    for (int v = 0; v < 8; ++v) {
      const __m256i i = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(x + 8 * v)));
      acc[v] = _mm256_add_epi32(acc[v], _mm256_i32gather_epi32(row, i, 4));
    }
  }
  for (int v = 0; v < 8; ++v) {
    __m256i* o = reinterpret_cast<__m256i*>(out + 8 * v);
    if (accumulate) acc[v] = _mm256_add_epi32(acc[v], _mm256_loadu_si256(o));
    _mm256_storeu_si256(o, acc[v]);
  }
}

}  // namespace

void lut_gemm_i32__avx2_u8(const LutGemmArgs& a) {
  for (size_t l0 = 0; l0 < a.lanes; l0 += 64) {
    for (size_t k0 = 0; k0 < a.k || k0 == 0; k0 += kBlockK) {
      const size_t k1 = std::min(a.k, k0 + kBlockK);
      for (size_t t = 0; t < a.nt; ++t)
        Tile(a.tables, a.idx + l0, a.ldidx, k0, k1, a.sel + t * a.ldsel, a.out + t * a.lanes + l0, k0 > 0);
      if (a.k == 0) break;
    }
  }
}

}  // namespace axmoe::kernels
