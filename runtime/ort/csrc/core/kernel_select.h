// Which kernel variant runs. The variants compiled in and supported by this CPU are found
// once per process, best first (avx512 > avx2 > scalar on x86-64; neon > scalar on aarch64);
// each session picks one, and a GEMM path, through two onnxruntime session config entries
// that the library reads when it is registered on the SessionOptions (register.cc):
//
//   axmoe.kernel = auto | scalar | avx2 | avx512 | neon     ISA of both paths (auto: the best)
//   axmoe.path   = auto | lut | decomposed                  which GEMM path
//
// auto path: decomposed when the LUT has an exact masked-product split whose terms fit int8
// weights (see lut_plan.h), else the general LUT path. Forcing an ISA the CPU lacks, or the
// decomposed path for a LUT without the structure, is an error, never a silent fallback.
#pragma once

#include <string>
#include <vector>

#include "kernels/kernels.h"

namespace axmoe {

struct KernelVariant {
  const char* isa;
  kernels::LutGemmFn lut;
  const char* lut_name;
  kernels::DotGemmFn dot;
  const char* dot_name;
  bool lut_needs_planes;  // the lut kernel reads int16 byte planes
  bool dot_takes_ct;      // the dot kernel applies a correction table (DotGemmArgs::ct)
};

enum class PathChoice { kAuto, kLut, kDecomposed };

// Session config keys of the choice (SessionOptions::AddConfigEntry); unset means auto.
inline constexpr char kKernelConfigKey[] = "axmoe.kernel";
inline constexpr char kPathConfigKey[] = "axmoe.path";

struct KernelChoice {
  const KernelVariant* variant = nullptr;  // never null once parsed
  PathChoice path = PathChoice::kAuto;
};

// Variants compiled in and supported by this CPU, best first (scalar always last).
const std::vector<const KernelVariant*>& SupportedVariants();
const KernelVariant& ScalarVariant();

// Parses the values of the two config entries; returns false with *error set (one line that
// names the key) on a bad value.
bool ParseKernelChoice(const std::string& isa, const std::string& path, KernelChoice* choice, std::string* error);

}  // namespace axmoe
