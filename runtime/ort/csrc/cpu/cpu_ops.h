// CPU kernels of the axmoe custom-op domain.
#pragma once

#include <vector>

#include "core/kernel_select.h"
#include "onnxruntime_cxx_api.h"

namespace axmoe::cpu {

// Ops are never freed: onnxruntime keeps raw pointers to them in every session, and
// OrtCustomOp (a C struct) has no virtual destructor to delete them through. The integer
// ops run the kernels of `choice` (ApproxMul has a single scalar loop).
OrtCustomOp* CreateApproxMul();
OrtCustomOp* CreateApproxConvInteger(const KernelChoice& choice);
OrtCustomOp* CreateApproxMatMulInteger(const KernelChoice& choice);

// One instance of every CPU op of the domain, alive for the rest of the process.
std::vector<OrtCustomOp*> CreateOps(const KernelChoice& choice);

}  // namespace axmoe::cpu
