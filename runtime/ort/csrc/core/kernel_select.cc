#include "core/kernel_select.h"

#include <cstring>

namespace axmoe {
namespace {

constexpr KernelVariant kVariants[] = {
#define AXMOE_VARIANT(isa, lut_fn, dot_fn, lut_needs_planes, dot_takes_ct) \
  {#isa, kernels::lut_fn, #lut_fn, kernels::dot_fn, #dot_fn, lut_needs_planes, dot_takes_ct},
#include "kernels/variants.inc"
#undef AXMOE_VARIANT
};

bool CpuSupports(const char* isa) {
#if defined(__x86_64__) || defined(_M_X64)
  __builtin_cpu_init();
  if (!std::strcmp(isa, "avx512"))
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512vbmi") &&
           __builtin_cpu_supports("avx512vnni");
  if (!std::strcmp(isa, "avx2")) return __builtin_cpu_supports("avx2");
#endif
#if defined(__aarch64__)
  if (!std::strcmp(isa, "neon")) return true;  // baseline on AArch64
#endif
  return !std::strcmp(isa, "scalar");
}

}  // namespace

const std::vector<const KernelVariant*>& SupportedVariants() {
  static const std::vector<const KernelVariant*> supported = [] {
    std::vector<const KernelVariant*> out;
    for (const KernelVariant& v : kVariants)
      if (CpuSupports(v.isa)) out.push_back(&v);
    return out;
  }();
  return supported;
}

const KernelVariant& ScalarVariant() { return *SupportedVariants().back(); }

bool ParseKernelChoice(const std::string& isa, const std::string& path, KernelChoice* choice, std::string* error) {
  if (path == "auto") {
    choice->path = PathChoice::kAuto;
  } else if (path == "lut") {
    choice->path = PathChoice::kLut;
  } else if (path == "decomposed") {
    choice->path = PathChoice::kDecomposed;
  } else {
    *error = std::string(kPathConfigKey) + "=" + path + " is not one of auto, lut, decomposed";
    return false;
  }
  if (isa == "auto") {
    choice->variant = SupportedVariants().front();
    return true;
  }
  for (const KernelVariant* v : SupportedVariants()) {
    if (isa == v->isa) {
      choice->variant = v;
      return true;
    }
  }
  std::string names;
  for (const KernelVariant* v : SupportedVariants()) names += std::string(names.empty() ? "" : ", ") + v->isa;
  *error = std::string(kKernelConfigKey) + "=" + isa + " is not available on this CPU/build (available: auto, " +
           names + ")";
  return false;
}

}  // namespace axmoe
