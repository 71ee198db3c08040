// dot_gemm scalar reference:
//   out[t][l] = sum_term sum_k int8(act[k/4][l][k%4] & mask[term]) * wts[term][t][k]
//               (+ the correction table's entries, see kernels.h)
// uint32 arithmetic gives int32 wrap-around without signed-overflow UB. Every other
// variant is tested bit for bit against this one.
#include <cstring>

#include "kernels/kernels.h"

namespace axmoe::kernels {

void dot_gemm_i32__scalar_u1(const DotGemmArgs& a) {
  for (size_t t = 0; t < a.nt; ++t) {
    uint32_t* acc = reinterpret_cast<uint32_t*>(a.out + t * a.lanes);
    std::memset(acc, 0, a.lanes * sizeof(uint32_t));
    for (size_t term = 0; term < a.nterms; ++term) {
      const int8_t mask = static_cast<int8_t>(a.masks[term]);
      const int8_t* w = a.wts + term * a.ld_term + t * a.ld_t;
      for (size_t k4 = 0; k4 < a.k4; ++k4) {
        const int32_t w0 = w[4 * k4], w1 = w[4 * k4 + 1], w2 = w[4 * k4 + 2], w3 = w[4 * k4 + 3];
        const int8_t* x = a.act + k4 * a.ldact * 4;
        for (size_t l = 0; l < a.lanes; ++l, x += 4) {
          const int32_t s = static_cast<int8_t>(x[0] & mask) * w0 + static_cast<int8_t>(x[1] & mask) * w1 +
                            static_cast<int8_t>(x[2] & mask) * w2 + static_cast<int8_t>(x[3] & mask) * w3;
          acc[l] += static_cast<uint32_t>(s);
        }
      }
    }
    if (!a.ct) continue;
    const int8_t* table = a.ct + t * a.ct_ld_t;
    for (size_t k4 = 0; k4 < a.k4; ++k4) {
      const uint8_t* idx = a.ct_idx + k4 * a.ldact * 4;
      for (size_t l = 0; l < a.lanes; ++l, idx += 4)
        for (size_t j = 0; j < 4; ++j) acc[l] += static_cast<uint32_t>(int32_t(table[64 * k4 + (idx[j] & 63)]));
    }
  }
}

}  // namespace axmoe::kernels
