// lut_gemm scalar reference: out[t][l] = sum_k tables[sel[t][k]][idx[k][l]].
// Handles any int32 table (no int16 planes); uint32 arithmetic gives int32 wrap-around
// without signed-overflow UB. Every other variant is tested bit for bit against this one.
#include <cstring>

#include "kernels/kernels.h"

namespace axmoe::kernels {

void lut_gemm_i32__scalar_u1(const LutGemmArgs& a) {
  for (size_t t = 0; t < a.nt; ++t) {
    uint32_t* acc = reinterpret_cast<uint32_t*>(a.out + t * a.lanes);
    std::memset(acc, 0, a.lanes * sizeof(uint32_t));
    const uint8_t* sel = a.sel + t * a.ldsel;
    for (size_t k = 0; k < a.k; ++k) {
      const uint32_t* row = reinterpret_cast<const uint32_t*>(a.tables) + size_t(sel[k]) * 256;
      const uint8_t* idx = a.idx + k * a.ldidx;
      for (size_t l = 0; l < a.lanes; ++l) acc[l] += row[idx[l]];
    }
  }
}

}  // namespace axmoe::kernels
