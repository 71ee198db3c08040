// Shared plumbing of the axmoe CPU ops: reading inputs of any dtype, the zero-point rules,
// the LUT input, attributes, and onnxruntime's intra-op thread pool as a ParallelFor.
//
// Zero points (DESIGN.md): an activation is uint8 with zero point 128 or int8 with zero
// point 0 (a = q - zp, a signed byte); a weight is int8 with zero point 0. Anything else is
// asymmetric and rejected with a status that names it.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/approx_gemm.h"
#include "core/kernel_select.h"
#include "core/lut_plan.h"
#include "onnxruntime_cxx_api.h"

namespace axmoe::cpu {

struct InputTensor {
  bool present = false;
  ONNXTensorElementDataType type = ONNX_TENSOR_ELEMENT_DATA_TYPE_UNDEFINED;
  std::vector<int64_t> shape;
  const void* data = nullptr;
  int64_t size = 0;
};

std::string ShapeString(const std::vector<int64_t>& shape);
const char* TypeName(ONNXTensorElementDataType type);
InputTensor GetInput(Ort::KernelContext& ctx, size_t index);

Ort::Status InvalidArgument(const std::string& op, const std::string& message);

// Byte flip that turns the stored activation bytes into signed operands (0x80 for uint8
// with zero point 128, 0 for int8 with zero point 0). zp_len: allowed length of a 1-D zero
// point (-1: scalar only).
Ort::Status ActivationFlip(const std::string& op, const char* x_name, const InputTensor& x, const InputTensor& zp,
                           int64_t zp_len, uint8_t* flip);
Ort::Status CheckWeight(const std::string& op, const char* w_name, const InputTensor& w, const InputTensor& zp,
                        int64_t zp_len);

// The session's kernel choice and what a kernel reads once, when onnxruntime creates it.
struct KernelSetup {
  KernelChoice choice;                           // of the op, from the session's config
  std::shared_ptr<const LutPlan> constant_plan;  // when the LUT input is an initializer
  bool constant_weights = false;                 // when the weight input is an initializer
};
KernelSetup ReadKernelSetup(const KernelChoice& choice, const OrtApi& api, const OrtKernelInfo* info,
                            size_t weight_input, size_t lut_input);

// The plan for this call's LUT input (checked: int32 [256, 256]).
Ort::Status LutPlanFor(const std::string& op, const KernelSetup& setup, const InputTensor& lut,
                       std::shared_ptr<const LutPlan>* plan);

// Attribute readers: false when the attribute is absent.
bool GetIntAttribute(const OrtApi& api, const OrtKernelInfo* info, const char* name, int64_t* value);
bool GetIntsAttribute(const OrtApi& api, const OrtKernelInfo* info, const char* name, std::vector<int64_t>* value);
bool GetStringAttribute(const OrtApi& api, const OrtKernelInfo* info, const char* name, std::string* value);

// Runs tasks on onnxruntime's intra-op thread pool of this session.
ParallelFor OrtParallelFor(Ort::KernelContext& ctx);

}  // namespace axmoe::cpu
