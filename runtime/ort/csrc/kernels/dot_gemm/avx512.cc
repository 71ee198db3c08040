// dot_gemm on AVX-512 VNNI: vpdpbusd, 64 u8 x s8 products per instruction.
//
// vpdpbusd multiplies unsigned activation bytes by signed weight bytes, so a term whose
// activation mask keeps the sign bit feeds alpha + 128 = (a & mask) ^ 0x80 (one vpternlogd)
// and the accumulator starts at -128 * sum_k wts[term][t][k]; a mask without the sign bit
// leaves alpha in [0, 127], already unsigned. Register tile: 6 output rows x 4 vectors of
// 16 lanes (24 accumulators); each weight dword (4 consecutive k) is broadcast.
// Correction-table terms (kernels.h) cost one vpermb + one vpaddb per 64 products for all of
// them together, instead of one vpdpbusd per term.
#include <immintrin.h>

#include <cstring>

#include "kernels/kernels.h"

namespace axmoe::kernels {
namespace {

constexpr int kRows = 6;
constexpr int kVecs = 4;

template <int NT, int NV>
void Tile(const DotGemmArgs& a, size_t t0, size_t l0) {
  __m512i acc[NT][NV];
  for (int t = 0; t < NT; ++t) {
    uint32_t bias = 0;
    for (size_t term = 0; term < a.nterms; ++term)
      if (a.masks[term] & 0x80) bias -= 128u * static_cast<uint32_t>(a.wsum[term * a.ld_wsum + t0 + t]);
    for (int v = 0; v < NV; ++v) acc[t][v] = _mm512_set1_epi32(static_cast<int32_t>(bias));
  }
  for (size_t term = 0; term < a.nterms; ++term) {
    const __m512i mask = _mm512_set1_epi8(static_cast<char>(a.masks[term]));
    const __m512i flip = _mm512_set1_epi8(static_cast<char>(a.masks[term] & 0x80));
    const int8_t* w = a.wts + term * a.ld_term + t0 * a.ld_t;
    const int8_t* x = a.act + l0 * 4;
    for (size_t k4 = 0; k4 < a.k4; ++k4, x += a.ldact * 4) {
      __m512i u[NV];
      for (int v = 0; v < NV; ++v)  // (x & mask) ^ flip
        u[v] = _mm512_ternarylogic_epi32(_mm512_loadu_si512(x + 64 * v), mask, flip, 0x6A);
      for (int t = 0; t < NT; ++t) {
        int32_t wd;
        std::memcpy(&wd, w + t * a.ld_t + 4 * k4, 4);
        const __m512i wb = _mm512_set1_epi32(wd);
        for (int v = 0; v < NV; ++v) acc[t][v] = _mm512_dpbusd_epi32(acc[t][v], u[v], wb);
      }
    }
  }
  for (int t = 0; t < NT; ++t)
    for (int v = 0; v < NV; ++v) _mm512_storeu_si512(a.out + (t0 + t) * a.lanes + l0 + 16 * v, acc[t][v]);
}

// Rows t0 .. t0 + NT over every lane: a row's weights and tables are reused from L1 across
// the lanes of the panel.
template <int NT>
void Rows(const DotGemmArgs& a, size_t t0) {
  size_t l0 = 0;
  for (; l0 + 16 * kVecs <= a.lanes; l0 += 16 * kVecs) Tile<NT, kVecs>(a, t0, l0);
  switch ((a.lanes - l0) / 16) {
    case 3: Tile<NT, 3>(a, t0, l0); break;
    case 2: Tile<NT, 2>(a, t0, l0); break;
    case 1: Tile<NT, 1>(a, t0, l0); break;
    default: break;
  }
}

// Correction table, after the dot-product terms: for NT rows and NV vectors of lanes, vpermb
// looks up the 64-byte table of each k4, vpaddb sums ct_group steps in int8, and one
// vpdpbusd against ones adds the 4 bytes of each lane into the int32 output. The index
// vectors of 64 lanes stay in L1 while every row's tables stream past them.
template <int NT, int NV>
void TableTile(const DotGemmArgs& a, size_t t0, size_t l0) {
  const __m512i ones = _mm512_set1_epi8(1);
  __m512i acc[NT][NV], sum[NT][NV];
  for (int t = 0; t < NT; ++t)
    for (int v = 0; v < NV; ++v)
      acc[t][v] = _mm512_loadu_si512(a.out + (t0 + t) * a.lanes + l0 + 16 * v), sum[t][v] = _mm512_setzero_si512();
  const uint8_t* idx = a.ct_idx + l0 * 4;
  const int8_t* table = a.ct + t0 * a.ct_ld_t;
  size_t pending = 0;
  for (size_t k4 = 0; k4 < a.k4; ++k4, idx += a.ldact * 4) {
    __m512i x[NV];
    for (int v = 0; v < NV; ++v) x[v] = _mm512_loadu_si512(idx + 64 * v);
    for (int t = 0; t < NT; ++t) {
      const __m512i tab = _mm512_loadu_si512(table + t * a.ct_ld_t + 64 * k4);
      for (int v = 0; v < NV; ++v) sum[t][v] = _mm512_add_epi8(sum[t][v], _mm512_permutexvar_epi8(x[v], tab));
    }
    if (++pending == a.ct_group) {
      for (int t = 0; t < NT; ++t)
        for (int v = 0; v < NV; ++v)
          acc[t][v] = _mm512_dpbusd_epi32(acc[t][v], ones, sum[t][v]), sum[t][v] = _mm512_setzero_si512();
      pending = 0;
    }
  }
  for (int t = 0; t < NT; ++t)
    for (int v = 0; v < NV; ++v)
      _mm512_storeu_si512(a.out + (t0 + t) * a.lanes + l0 + 16 * v, _mm512_dpbusd_epi32(acc[t][v], ones, sum[t][v]));
}

template <int NV>
void TableColumn(const DotGemmArgs& a, size_t l0) {
  size_t t0 = 0;
  for (; t0 + 3 <= a.nt; t0 += 3) TableTile<3, NV>(a, t0, l0);
  for (; t0 < a.nt; ++t0) TableTile<1, NV>(a, t0, l0);
}

}  // namespace

void dot_gemm_i32__avx512vnni_u4x6(const DotGemmArgs& a) {
  size_t t0 = 0;
  for (; t0 + kRows <= a.nt; t0 += kRows) Rows<kRows>(a, t0);
  switch (a.nt - t0) {
    case 5: Rows<5>(a, t0); break;
    case 4: Rows<4>(a, t0); break;
    case 3: Rows<3>(a, t0); break;
    case 2: Rows<2>(a, t0); break;
    case 1: Rows<1>(a, t0); break;
    default: break;
  }
  if (!a.ct) return;
  size_t l0 = 0;
  for (; l0 + 64 <= a.lanes; l0 += 64) TableColumn<4>(a, l0);
  for (; l0 < a.lanes; l0 += 16) TableColumn<1>(a, l0);
}

}  // namespace axmoe::kernels
