// axmoe.ApproxMul: elementwise approximate product through a multiplier's LUT.
//
//   Y[i] = LUT[A[i] + 128, B[i] + 128]      A, B: int8 (same shape), LUT: int32 (256, 256)
//
// The smallest op of the domain; it proves the build and registration path and lets tests
// check a LUT inside onnxruntime against the numpy oracle element by element.
#include <cstdint>
#include <string>

#include "cpu/cpu_ops.h"
#include "onnxruntime_lite_custom_op.h"

namespace axmoe::cpu {
namespace {

std::string ShapeString(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

Ort::Status ApproxMul(const Ort::Custom::Tensor<int8_t>& a, const Ort::Custom::Tensor<int8_t>& b,
                      const Ort::Custom::Tensor<int32_t>& lut, Ort::Custom::Tensor<int32_t>& y) {
  if (lut.Shape() != std::vector<int64_t>{256, 256}) {
    return Ort::Status(("ApproxMul: LUT must have shape [256, 256], got " + ShapeString(lut.Shape())).c_str(),
                       ORT_INVALID_ARGUMENT);
  }
  if (a.Shape() != b.Shape()) {
    return Ort::Status(("ApproxMul: A and B must have the same shape, got " + ShapeString(a.Shape()) +
                        " and " + ShapeString(b.Shape())).c_str(),
                       ORT_INVALID_ARGUMENT);
  }
  const int64_t n = a.NumberOfElement();
  const int8_t* pa = a.Data();
  const int8_t* pb = b.Data();
  const int32_t* table = lut.Data();
  int32_t* out = y.Allocate(a.Shape());
  for (int64_t i = 0; i < n; ++i) {
    out[i] = table[(static_cast<int32_t>(pa[i]) + 128) * 256 + (static_cast<int32_t>(pb[i]) + 128)];
  }
  return Ort::Status{nullptr};
}

}  // namespace

OrtCustomOp* CreateApproxMul() {
  return Ort::Custom::CreateLiteCustomOp("ApproxMul", "CPUExecutionProvider", ApproxMul);
}

}  // namespace axmoe::cpu
