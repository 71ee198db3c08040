// Plain C entry points for introspection from Python (ctypes) and tools; the ops themselves
// are reached through RegisterCustomOps.
//
//   axmoe_kernel_variants()          "avx512,avx2,scalar": ISAs usable here, best first
//   axmoe_kernel_names(isa)          "lut_gemm_i32__...,dot_gemm_i32__..." for one ISA
//   axmoe_describe_lut(lut, buf, n)  path a LUT takes and why: "decomposed: <formula>" or
//                                    "lut: <reason>"; returns the full length (snprintf rules)
#include <cstdio>
#include <cstring>
#include <string>

#include "core/kernel_select.h"
#include "core/lut_plan.h"

#define AXMOE_EXPORT extern "C" __attribute__((visibility("default")))

AXMOE_EXPORT const char* axmoe_kernel_variants() {
  static const std::string names = [] {
    std::string s;
    for (const axmoe::KernelVariant* v : axmoe::SupportedVariants()) s += std::string(s.empty() ? "" : ",") + v->isa;
    return s;
  }();
  return names.c_str();
}

AXMOE_EXPORT const char* axmoe_kernel_names(const char* isa) {
  for (const axmoe::KernelVariant* v : axmoe::SupportedVariants()) {
    if (isa && !std::strcmp(isa, v->isa)) {
      thread_local std::string names;
      names = std::string(v->lut_name) + "," + v->dot_name;
      return names.c_str();
    }
  }
  return "";
}

AXMOE_EXPORT int axmoe_describe_lut(const int32_t* lut, char* buf, size_t size) {
  if (!lut) return -1;
  const std::string text = axmoe::GetLutPlan(lut)->Describe();
  return std::snprintf(buf, size, "%s", text.c_str());
}
