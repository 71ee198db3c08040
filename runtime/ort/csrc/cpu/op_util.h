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

// The `linear` compensation term (modelfile/ops.py, LINEAR_FRACTION_BITS): per output channel
// o an int64 coefficient g_o, and every output of channel o gets
//     t = floor((g_o * S + 2^(F-1)) / 2^F),   F = kLinearFractionBits, in int64,
// added to its int32 accumulator (wrapping), S = sum of the signed activations a = x - zp over
// the output's receptive field (padding 0; per group for a grouped conv; a row of a MatMul).
constexpr int kLinearFractionBits = 16;
// |g_o| bound the kernels accept: g * S stays far inside int64 for any int32-sized S.
constexpr int64_t kLinearMaxAbs = int64_t(1) << 31;

inline int64_t LinearTerm(int64_t g, int64_t s) {
  const int64_t v = g * s + (int64_t(1) << (kLinearFractionBits - 1));
  // floor division by 2^F without relying on >> of negatives (implementation-defined in C++17)
  return v >= 0 ? v >> kLinearFractionBits : -((-(v + 1)) >> kLinearFractionBits) - 1;
}

// Checks the optional `linear` input: absent (*g = nullptr) or int64 [M] with |g_o| < 2^31.
Ort::Status LinearInput(const std::string& op, const InputTensor& linear, int64_t M, const int64_t** g);

// Adds the linear term to a conv output y [N, G * Mg, OH * OW] (im2col geometry `geo` of one
// group; x [N, G * geo.C, H, W] stored bytes, a = int8(x ^ flip)).
void AddLinearConv(const uint8_t* x, uint8_t flip, const ConvGeometry& geo, int64_t N, int64_t G, int64_t Mg,
                   const int64_t* g, int32_t* y);

// Adds the linear term to every problem of a matmul batch: Y[i][j] += t(g_j, sum_k a(i, k)).
void AddLinearRows(const GemmBatch& batch, const int64_t* g);

// Runs tasks on onnxruntime's intra-op thread pool of this session.
ParallelFor OrtParallelFor(Ort::KernelContext& ctx);

}  // namespace axmoe::cpu
