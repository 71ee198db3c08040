// lut_gemm on AVX-512 VBMI + VNNI: 64 table lookups per vpermi2b pair, no gathers.
//
// For one (t, k) the 256-entry table T(sel, .) is split into its low and high bytes, each
// 4 zmm registers (256 bytes). A 64-lane index vector x is looked up in both:
//   vpermi2b(x, P0, P1) and vpermi2b(x, P2, P3) read entries 0-127 / 128-255 by x's low
//   7 bits, and bit 7 of x (vpmovb2m) picks one of the two.
// Interleaving the low and high bytes (vpunpck{l,h}bw) gives the int16 values; vpdpwssd
// against (1, 0) / (0, 1) word pairs adds the even / odd words into int32 accumulators.
// The accumulators then hold the 64 lanes in a fixed permuted order, undone once per tile
// by a 4x4 transpose of 128-bit blocks. K is blocked so the index panel stays in L1.
//
// Requires every table entry to fit int16 (planes != null); the dispatcher falls back
// to the scalar kernel otherwise.
#include <immintrin.h>

#include <algorithm>

#include "kernels/kernels.h"

namespace axmoe::kernels {
namespace {

constexpr size_t kBlockK = 64;

// acc[0..3] (even/odd words of the low/high unpack) -> 4 vectors of 16 lanes in order.
inline void Unpermute(const __m512i acc[4], __m512i r[4]) {
  const __m512i x0 = _mm512_unpacklo_epi32(acc[0], acc[1]);  // lanes 16q + 0..3
  const __m512i x1 = _mm512_unpackhi_epi32(acc[0], acc[1]);  // lanes 16q + 4..7
  const __m512i x2 = _mm512_unpacklo_epi32(acc[2], acc[3]);  // lanes 16q + 8..11
  const __m512i x3 = _mm512_unpackhi_epi32(acc[2], acc[3]);  // lanes 16q + 12..15
  const __m512i t0 = _mm512_shuffle_i32x4(x0, x1, _MM_SHUFFLE(1, 0, 1, 0));
  const __m512i t1 = _mm512_shuffle_i32x4(x2, x3, _MM_SHUFFLE(1, 0, 1, 0));
  const __m512i t2 = _mm512_shuffle_i32x4(x0, x1, _MM_SHUFFLE(3, 2, 3, 2));
  const __m512i t3 = _mm512_shuffle_i32x4(x2, x3, _MM_SHUFFLE(3, 2, 3, 2));
  r[0] = _mm512_shuffle_i32x4(t0, t1, _MM_SHUFFLE(2, 0, 2, 0));
  r[1] = _mm512_shuffle_i32x4(t0, t1, _MM_SHUFFLE(3, 1, 3, 1));
  r[2] = _mm512_shuffle_i32x4(t2, t3, _MM_SHUFFLE(2, 0, 2, 0));
  r[3] = _mm512_shuffle_i32x4(t2, t3, _MM_SHUFFLE(3, 1, 3, 1));
}

inline __m512i Lookup(__m512i x, __mmask64 high, __m512i p0, __m512i p1, __m512i p2, __m512i p3) {
  return _mm512_mask_blend_epi8(high, _mm512_permutex2var_epi8(p0, x, p1),
                                _mm512_permutex2var_epi8(p2, x, p3));
}

// One output row t, NB x 64 lanes, k in [k0, k1): out (+)= sum.
template <int NB>
inline void Tile(const uint8_t* planes, const uint8_t* idx, size_t ldidx, size_t k0, size_t k1,
                 const uint8_t* sel, int32_t* out, bool accumulate) {
  const __m512i even = _mm512_set1_epi32(1);
  const __m512i odd = _mm512_set1_epi32(1 << 16);
  __m512i acc[NB][4];
  for (int v = 0; v < NB; ++v)
    for (int j = 0; j < 4; ++j) acc[v][j] = _mm512_setzero_si512();
  for (size_t k = k0; k < k1; ++k) {
    const uint8_t* tab = planes + size_t(sel[k]) * 512;
    const __m512i l0 = _mm512_load_si512(tab), l1 = _mm512_load_si512(tab + 64);
    const __m512i l2 = _mm512_load_si512(tab + 128), l3 = _mm512_load_si512(tab + 192);
    const __m512i h0 = _mm512_load_si512(tab + 256), h1 = _mm512_load_si512(tab + 320);
    const __m512i h2 = _mm512_load_si512(tab + 384), h3 = _mm512_load_si512(tab + 448);
    const uint8_t* row = idx + k * ldidx;
    for (int v = 0; v < NB; ++v) {
      const __m512i x = _mm512_loadu_si512(row + 64 * v);
      const __mmask64 high = _mm512_movepi8_mask(x);
      const __m512i lo = Lookup(x, high, l0, l1, l2, l3);
      const __m512i hi = Lookup(x, high, h0, h1, h2, h3);
      const __m512i wl = _mm512_unpacklo_epi8(lo, hi);
      const __m512i wh = _mm512_unpackhi_epi8(lo, hi);
      acc[v][0] = _mm512_dpwssd_epi32(acc[v][0], wl, even);
      acc[v][1] = _mm512_dpwssd_epi32(acc[v][1], wl, odd);
      acc[v][2] = _mm512_dpwssd_epi32(acc[v][2], wh, even);
      acc[v][3] = _mm512_dpwssd_epi32(acc[v][3], wh, odd);
    }
  }
  for (int v = 0; v < NB; ++v) {
    __m512i r[4];
    Unpermute(acc[v], r);
    int32_t* o = out + 64 * v;
    for (int j = 0; j < 4; ++j) {
      if (accumulate) r[j] = _mm512_add_epi32(r[j], _mm512_loadu_si512(o + 16 * j));
      _mm512_storeu_si512(o + 16 * j, r[j]);
    }
  }
}

template <int NB>
void Panel(const LutGemmArgs& a, size_t l0) {
  for (size_t k0 = 0; k0 < a.k || k0 == 0; k0 += kBlockK) {
    const size_t k1 = std::min(a.k, k0 + kBlockK);
    for (size_t t = 0; t < a.nt; ++t)
      Tile<NB>(a.planes, a.idx + l0, a.ldidx, k0, k1, a.sel + t * a.ldsel, a.out + t * a.lanes + l0, k0 > 0);
    if (a.k == 0) break;
  }
}

}  // namespace

void lut_gemm_i32__avx512vbmi_u4(const LutGemmArgs& a) {
  size_t l0 = 0;
  for (; l0 + 256 <= a.lanes; l0 += 256) Panel<4>(a, l0);
  switch ((a.lanes - l0) / 64) {
    case 3: Panel<3>(a, l0); break;
    case 2: Panel<2>(a, l0); break;
    case 1: Panel<1>(a, l0); break;
    default: break;
  }
}

}  // namespace axmoe::kernels
