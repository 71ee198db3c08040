// dot_gemm on AVX2: vpmaddwd on sign-extended bytes (exact; vpmaddubsw would saturate).
// 16 bytes = 4 lanes x 4 k become 16 int16 words; vpmaddwd against the broadcast 4 weights
// of row t gives 8 int32 (two k-pairs per lane), summed pairwise when the tile is stored.
// Register tile: 2 output rows x 4 vectors of 4 lanes.
#include <immintrin.h>

#include <cstring>

#include "kernels/kernels.h"

namespace axmoe::kernels {
namespace {

constexpr int kRows = 2;
constexpr int kVecs = 4;

template <int NT>
void Tile(const DotGemmArgs& a, size_t t0, size_t l0) {
  __m256i acc[NT][kVecs];
  for (int t = 0; t < NT; ++t)
    for (int v = 0; v < kVecs; ++v) acc[t][v] = _mm256_setzero_si256();
  for (size_t term = 0; term < a.nterms; ++term) {
    const __m128i mask = _mm_set1_epi8(static_cast<char>(a.masks[term]));
    const int8_t* w = a.wts + term * a.ld_term + t0 * a.ld_t;
    const int8_t* x = a.act + l0 * 4;
    for (size_t k4 = 0; k4 < a.k4; ++k4, x += a.ldact * 4) {
      __m256i u[kVecs];
      for (int v = 0; v < kVecs; ++v)
        u[v] = _mm256_cvtepi8_epi16(_mm_and_si128(_mm_loadu_si128(reinterpret_cast<const __m128i*>(x + 16 * v)), mask));
      for (int t = 0; t < NT; ++t) {
        int32_t wd;
        std::memcpy(&wd, w + t * a.ld_t + 4 * k4, 4);
        const __m256i wb = _mm256_broadcastq_epi64(_mm_cvtepi8_epi16(_mm_cvtsi32_si128(wd)));
        for (int v = 0; v < kVecs; ++v) acc[t][v] = _mm256_add_epi32(acc[t][v], _mm256_madd_epi16(u[v], wb));
      }
    }
  }
  for (int t = 0; t < NT; ++t) {
    // hadd within 128-bit halves: [l0 l1 l4 l5 | l2 l3 l6 l7] for vectors (v, v+1).
    const __m256i s01 = _mm256_permute4x64_epi64(_mm256_hadd_epi32(acc[t][0], acc[t][1]), _MM_SHUFFLE(3, 1, 2, 0));
    const __m256i s23 = _mm256_permute4x64_epi64(_mm256_hadd_epi32(acc[t][2], acc[t][3]), _MM_SHUFFLE(3, 1, 2, 0));
    int32_t* o = a.out + (t0 + t) * a.lanes + l0;
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(o), s01);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(o + 8), s23);
  }
}

}  // namespace

void dot_gemm_i32__avx2_u4x2(const DotGemmArgs& a) {
  for (size_t l0 = 0; l0 < a.lanes; l0 += 4 * kVecs) {
    size_t t0 = 0;
    for (; t0 + kRows <= a.nt; t0 += kRows) Tile<kRows>(a, t0, l0);
    if (t0 < a.nt) Tile<1>(a, t0, l0);
  }
}

}  // namespace axmoe::kernels
