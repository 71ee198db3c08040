// CPU kernels of the axmoe custom-op domain.
#pragma once

#include <memory>
#include <vector>

#include "onnxruntime_cxx_api.h"

namespace axmoe::cpu {

std::unique_ptr<OrtCustomOp> CreateApproxMul();
std::unique_ptr<OrtCustomOp> CreateApproxConvInteger();
std::unique_ptr<OrtCustomOp> CreateApproxMatMulInteger();

// Creates one instance of every CPU op of the domain (owned by the caller).
std::vector<std::unique_ptr<OrtCustomOp>> CreateOps();

}  // namespace axmoe::cpu
