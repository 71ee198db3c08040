// dot_gemm on AArch64 NEON. The masked activation int8(a & mask) is signed, as the weights
// are, so no offset is needed: with the dot-product extension (SDOT, Armv8.2, e.g. the
// Cortex-A76 of a Raspberry Pi 5; build with -march=armv8.2-a+dotprod) one vdotq_s32 adds 4
// products per lane; without it (Cortex-A72, Pi 4) vmull_s8 + vpadalq_s16 do it exactly in
// int16/int32. Register tile: 2 output rows x 16 lanes (4 vectors of 4 lanes x 4 k).
#include <arm_neon.h>

#include <cstring>

#include "kernels/kernels.h"

namespace axmoe::kernels {
namespace {

template <int NT>
void Tile(const DotGemmArgs& a, size_t t0, size_t l0) {
#if defined(__ARM_FEATURE_DOTPROD)
  int32x4_t acc[NT][4];
  for (int t = 0; t < NT; ++t)
    for (int v = 0; v < 4; ++v) acc[t][v] = vdupq_n_s32(0);
#else
  int32x4_t acc[NT][8];  // per 4 lanes: (lanes 0-1, lanes 2-3) x k-pairs
  for (int t = 0; t < NT; ++t)
    for (int v = 0; v < 8; ++v) acc[t][v] = vdupq_n_s32(0);
#endif
  for (size_t term = 0; term < a.nterms; ++term) {
    const int8x16_t mask = vreinterpretq_s8_u8(vdupq_n_u8(a.masks[term]));
    const int8_t* w = a.wts + term * a.ld_term + t0 * a.ld_t;
    const int8_t* x = a.act + l0 * 4;
    for (size_t k4 = 0; k4 < a.k4; ++k4, x += a.ldact * 4) {
      int8x16_t u[4];
      for (int v = 0; v < 4; ++v) u[v] = vandq_s8(vld1q_s8(x + 16 * v), mask);
      for (int t = 0; t < NT; ++t) {
        uint32_t wd;
        std::memcpy(&wd, w + t * a.ld_t + 4 * k4, 4);
        const int8x16_t wb = vreinterpretq_s8_u32(vdupq_n_u32(wd));
        for (int v = 0; v < 4; ++v) {
#if defined(__ARM_FEATURE_DOTPROD)
          acc[t][v] = vdotq_s32(acc[t][v], u[v], wb);
#else
          acc[t][2 * v] = vpadalq_s16(acc[t][2 * v], vmull_s8(vget_low_s8(u[v]), vget_low_s8(wb)));
          acc[t][2 * v + 1] = vpadalq_s16(acc[t][2 * v + 1], vmull_high_s8(u[v], wb));
#endif
        }
      }
    }
  }
  for (int t = 0; t < NT; ++t) {
    int32_t* o = a.out + (t0 + t) * a.lanes + l0;
    for (int v = 0; v < 4; ++v) {
#if defined(__ARM_FEATURE_DOTPROD)
      vst1q_s32(o + 4 * v, acc[t][v]);
#else
      vst1q_s32(o + 4 * v, vpaddq_s32(acc[t][2 * v], acc[t][2 * v + 1]));
#endif
    }
  }
}

}  // namespace

void dot_gemm_i32__neon_u4x2(const DotGemmArgs& a) {
  for (size_t l0 = 0; l0 < a.lanes; l0 += 16) {
    size_t t0 = 0;
    for (; t0 + 2 <= a.nt; t0 += 2) Tile<2>(a, t0, l0);
    if (t0 < a.nt) Tile<1>(a, t0, l0);
  }
}

}  // namespace axmoe::kernels
