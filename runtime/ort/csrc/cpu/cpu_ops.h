// CPU kernels of the axmoe custom-op domain.
#pragma once

#include <vector>

#include "onnxruntime_cxx_api.h"

namespace axmoe::cpu {

// Ops are never freed: onnxruntime keeps raw pointers to them in every session, and
// OrtCustomOp (a C struct) has no virtual destructor to delete them through.
OrtCustomOp* CreateApproxMul();
OrtCustomOp* CreateApproxConvInteger();
OrtCustomOp* CreateApproxMatMulInteger();

// One instance of every CPU op of the domain, alive for the rest of the process.
std::vector<OrtCustomOp*> CreateOps();

}  // namespace axmoe::cpu
