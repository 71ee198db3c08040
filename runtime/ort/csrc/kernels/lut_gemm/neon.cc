// lut_gemm on AArch64 NEON: 16 table lookups per tbl/tbx chain.
//
// The 256-entry table T(sel, .) is split into low and high byte planes of 16 q registers
// each; one plane is looked up with vqtbl4q (entries 0-63) then vqtbx4q on idx - 64, - 128,
// - 192 (out-of-range indices leave the lane alone). Low bytes (unsigned) accumulate in
// uint16 and high bytes (signed) in int16, flushed to int32 every 256 k, before they could
// overflow; the result is 256 * sum(high) + sum(low). Needs every entry to fit int16.
#include <arm_neon.h>

#include <algorithm>
#include <cstring>

#include "kernels/kernels.h"

namespace axmoe::kernels {
namespace {

constexpr size_t kFlushK = 256;  // 256 * 255 fits uint16, 256 * -128 fits int16

inline uint8x16_t Lookup(const uint8_t* plane, uint8x16_t i0, uint8x16_t i1, uint8x16_t i2, uint8x16_t i3) {
  uint8x16_t r = vqtbl4q_u8(vld1q_u8_x4(plane), i0);
  r = vqtbx4q_u8(r, vld1q_u8_x4(plane + 64), i1);
  r = vqtbx4q_u8(r, vld1q_u8_x4(plane + 128), i2);
  return vqtbx4q_u8(r, vld1q_u8_x4(plane + 192), i3);
}

// out[0..16) (+)= sum over k in [k0, k1) of T(sel[k], idx[k][0..16)).
void Tile16(const uint8_t* planes, const uint8_t* idx, size_t ldidx, size_t k0, size_t k1, const uint8_t* sel,
            int32_t* out, bool accumulate) {
  const uint8x16_t c64 = vdupq_n_u8(64), c128 = vdupq_n_u8(128), c192 = vdupq_n_u8(192);
  uint16x8_t lo0 = vdupq_n_u16(0), lo1 = vdupq_n_u16(0);
  int16x8_t hi0 = vdupq_n_s16(0), hi1 = vdupq_n_s16(0);
  for (size_t k = k0; k < k1; ++k) {
    const uint8_t* tab = planes + size_t(sel[k]) * 512;
    const uint8x16_t i0 = vld1q_u8(idx + k * ldidx);
    const uint8x16_t i1 = vsubq_u8(i0, c64), i2 = vsubq_u8(i0, c128), i3 = vsubq_u8(i0, c192);
    const uint8x16_t l = Lookup(tab, i0, i1, i2, i3);
    const int8x16_t h = vreinterpretq_s8_u8(Lookup(tab + 256, i0, i1, i2, i3));
    lo0 = vaddw_u8(lo0, vget_low_u8(l));
    lo1 = vaddw_high_u8(lo1, l);
    hi0 = vaddw_s8(hi0, vget_low_s8(h));
    hi1 = vaddw_high_s8(hi1, h);
  }
  const uint32x4_t lo[4] = {vmovl_u16(vget_low_u16(lo0)), vmovl_high_u16(lo0), vmovl_u16(vget_low_u16(lo1)),
                            vmovl_high_u16(lo1)};
  const int32x4_t hi[4] = {vmovl_s16(vget_low_s16(hi0)), vmovl_high_s16(hi0), vmovl_s16(vget_low_s16(hi1)),
                           vmovl_high_s16(hi1)};
  for (int j = 0; j < 4; ++j) {
    uint32x4_t v = vaddq_u32(lo[j], vreinterpretq_u32_s32(vshlq_n_s32(hi[j], 8)));
    uint32_t* o = reinterpret_cast<uint32_t*>(out + 4 * j);
    if (accumulate) v = vaddq_u32(v, vld1q_u32(o));
    vst1q_u32(o, v);
  }
}

}  // namespace

void lut_gemm_i32__neon_u1(const LutGemmArgs& a) {
  for (size_t l0 = 0; l0 < a.lanes; l0 += 16) {
    for (size_t t = 0; t < a.nt; ++t) {
      const uint8_t* sel = a.sel + t * a.ldsel;
      int32_t* out = a.out + t * a.lanes + l0;
      if (a.k == 0) std::memset(out, 0, 16 * sizeof(int32_t));
      for (size_t k0 = 0; k0 < a.k; k0 += kFlushK)
        Tile16(a.planes, a.idx + l0, a.ldidx, k0, std::min(a.k, k0 + kFlushK), sel, out, k0 > 0);
    }
  }
}

}  // namespace axmoe::kernels
