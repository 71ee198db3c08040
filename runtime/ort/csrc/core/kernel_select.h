// Which kernel variant runs: chosen once per process from the CPU's features, best first
// (avx512 > avx2 > scalar on x86-64; neon > scalar on aarch64), and overridable for tests
// and benchmarks through the environment, read when an op kernel is created:
//
//   AXMOE_KERNEL = auto | scalar | avx2 | avx512 | neon     ISA of both paths
//   AXMOE_PATH   = auto | lut | decomposed                  which GEMM path
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

// Variants compiled in and supported by this CPU, best first (scalar always last).
const std::vector<const KernelVariant*>& SupportedVariants();
const KernelVariant& ScalarVariant();

// Reads AXMOE_KERNEL / AXMOE_PATH; returns false with *error set on a bad value.
bool SelectFromEnvironment(const KernelVariant** variant, PathChoice* path, std::string* error);

}  // namespace axmoe
