// Run-time choice of the AArch64 decomposed-path kernel for bundle builds of the op library.
// runtime/ort/csrc/kernels/dot_gemm/neon.cc picks SDOT or vmull_s8/vpadalq_s16 at compile
// time (__ARM_FEATURE_DOTPROD), so runtime.bundle.toolchain compiles it twice, renamed
// (-Ddot_gemm_i32__neon_u4x2=...__base with -march=armv8-a, ...__dotprod with
// -march=armv8.2-a+dotprod), and this file supplies the name the variant table calls:
//
//   dot_gemm_i32__neon_u4x2(a) = (AT_HWCAP & HWCAP_ASIMDDP) ? dotprod(a) : base(a)
//
// One library then runs on a Cortex-A72 (Raspberry Pi 4, no dot product) and uses SDOT on a
// Cortex-A76 (Pi 5). Both copies are bit-exact (int32 sums of int8 products). The choice is
// visible through axmoe_neon_dot_extension(), which the bundle runner prints.
#include <asm/hwcap.h>
#include <sys/auxv.h>

#include "kernels/kernels.h"

namespace axmoe::kernels {

void dot_gemm_i32__neon_u4x2__base(const DotGemmArgs& a);
void dot_gemm_i32__neon_u4x2__dotprod(const DotGemmArgs& a);

namespace {
bool HasDotProd() {
  static const bool has = (getauxval(AT_HWCAP) & HWCAP_ASIMDDP) != 0;
  return has;
}
}  // namespace

void dot_gemm_i32__neon_u4x2(const DotGemmArgs& a) {
  if (HasDotProd()) {
    dot_gemm_i32__neon_u4x2__dotprod(a);
  } else {
    dot_gemm_i32__neon_u4x2__base(a);
  }
}

}  // namespace axmoe::kernels

extern "C" __attribute__((visibility("default"))) const char* axmoe_neon_dot_extension() {
  return axmoe::kernels::HasDotProd() ? "dotprod (sdot, armv8.2-a)" : "none (smull/sadalp, armv8-a)";
}
