#include "cpu/op_util.h"

#include <algorithm>
#include <cstring>

namespace axmoe::cpu {

std::string ShapeString(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

const char* TypeName(ONNXTensorElementDataType type) {
  switch (type) {
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8: return "uint8";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_INT8: return "int8";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_INT16: return "int16";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT16: return "uint16";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_INT32: return "int32";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT32: return "uint32";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_INT64: return "int64";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT64: return "uint64";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT: return "float";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16: return "float16";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_DOUBLE: return "double";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_BOOL: return "bool";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_STRING: return "string";
    default: return "another type";
  }
}

InputTensor GetInput(Ort::KernelContext& ctx, size_t index) {
  InputTensor t;
  if (index >= ctx.GetInputCount()) return t;
  Ort::ConstValue value = ctx.GetInput(index);
  if (!value || !value.IsTensor()) return t;
  auto info = value.GetTensorTypeAndShapeInfo();
  t.present = true;
  t.type = info.GetElementType();
  t.shape = info.GetShape();
  t.size = static_cast<int64_t>(info.GetElementCount());
  t.data = value.GetTensorRawData();
  return t;
}

Ort::Status InvalidArgument(const std::string& op, const std::string& message) {
  return Ort::Status((op + ": " + message).c_str(), ORT_INVALID_ARGUMENT);
}

namespace {

Ort::Status CheckZeroPointShape(const std::string& op, const char* name, const InputTensor& zp, int64_t zp_len) {
  const bool scalar = zp.shape.empty() || (zp.shape.size() == 1 && zp.shape[0] == 1);
  const bool vector = zp.shape.size() == 1 && zp_len >= 0 && zp.shape[0] == zp_len;
  if (scalar || vector) return Ort::Status{nullptr};
  return InvalidArgument(op, std::string(name) + " must be a scalar" +
                                 (zp_len >= 0 ? " or have shape [" + std::to_string(zp_len) + "]" : "") +
                                 ", got shape " + ShapeString(zp.shape));
}

bool AllEqual(const InputTensor& zp, uint8_t value) {
  const uint8_t* p = static_cast<const uint8_t*>(zp.data);
  for (int64_t i = 0; i < zp.size; ++i)
    if (p[i] != value) return false;
  return true;
}

}  // namespace

Ort::Status ActivationFlip(const std::string& op, const char* x_name, const InputTensor& x, const InputTensor& zp,
                           int64_t zp_len, uint8_t* flip) {
  const std::string zp_name = std::string(x_name) + "_zero_point";
  if (x.type != ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8 && x.type != ONNX_TENSOR_ELEMENT_DATA_TYPE_INT8)
    return InvalidArgument(op, std::string(x_name) + " must be uint8 (zero point 128) or int8 (zero point 0), got " +
                                   TypeName(x.type) + " with shape " + ShapeString(x.shape));
  const bool is_uint8 = x.type == ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8;
  if (!zp.present) {
    if (is_uint8)
      return InvalidArgument(op, std::string(x_name) + " is uint8 without " + zp_name +
                                     ": zero point 0 is asymmetric; uint8 activations need zero point 128");
    *flip = 0;
    return Ort::Status{nullptr};
  }
  if (zp.type != x.type)
    return InvalidArgument(op, zp_name + " must have the dtype of " + x_name + " (" + TypeName(x.type) + "), got " +
                                   TypeName(zp.type));
  if (auto s = CheckZeroPointShape(op, zp_name.c_str(), zp, zp_len); !s.IsOK()) return s;
  const uint8_t want = is_uint8 ? 128 : 0;
  if (!AllEqual(zp, want))
    return InvalidArgument(op, zp_name + " must be " + std::to_string(want) + " for " + TypeName(x.type) + " " +
                                   x_name + " (signed operands a = q - zp); other zero points are asymmetric");
  *flip = is_uint8 ? 0x80 : 0;
  return Ort::Status{nullptr};
}

Ort::Status CheckWeight(const std::string& op, const char* w_name, const InputTensor& w, const InputTensor& zp,
                        int64_t zp_len) {
  const std::string zp_name = std::string(w_name) + "_zero_point";
  if (w.type != ONNX_TENSOR_ELEMENT_DATA_TYPE_INT8)
    return InvalidArgument(op, std::string(w_name) + " must be int8 with zero point 0, got " + TypeName(w.type) +
                                   " with shape " + ShapeString(w.shape));
  if (!zp.present) return Ort::Status{nullptr};
  if (zp.type != ONNX_TENSOR_ELEMENT_DATA_TYPE_INT8)
    return InvalidArgument(op, zp_name + " must be int8, got " + TypeName(zp.type));
  if (auto s = CheckZeroPointShape(op, zp_name.c_str(), zp, zp_len); !s.IsOK()) return s;
  if (!AllEqual(zp, 0)) return InvalidArgument(op, zp_name + " must be 0 (symmetric int8 weights)");
  return Ort::Status{nullptr};
}

KernelSetup ReadKernelSetup(const KernelChoice& choice, const OrtApi& api, const OrtKernelInfo* info,
                            size_t weight_input, size_t lut_input) {
  KernelSetup setup;
  setup.choice = choice;
  int is_constant = 0;
  const OrtValue* value = nullptr;
  OrtStatus* status = api.KernelInfoGetConstantInput_tensor(info, lut_input, &is_constant, &value);
  if (status) {
    api.ReleaseStatus(status);
  } else if (is_constant && value) {
    Ort::ConstValue lut(value);
    auto shape_info = lut.GetTensorTypeAndShapeInfo();
    if (shape_info.GetElementType() == ONNX_TENSOR_ELEMENT_DATA_TYPE_INT32 &&
        shape_info.GetShape() == std::vector<int64_t>{256, 256})
      setup.constant_plan = GetLutPlan(lut.GetTensorData<int32_t>());  // bad LUTs fail in Compute
  }
  is_constant = 0;
  status = api.KernelInfoGetConstantInput_tensor(info, weight_input, &is_constant, &value);
  if (status) {
    api.ReleaseStatus(status);
  } else {
    setup.constant_weights = is_constant != 0;
  }
  return setup;
}

Ort::Status LutPlanFor(const std::string& op, const KernelSetup& setup, const InputTensor& lut,
                       std::shared_ptr<const LutPlan>* plan) {
  if (!lut.present || lut.type != ONNX_TENSOR_ELEMENT_DATA_TYPE_INT32 || lut.shape != std::vector<int64_t>{256, 256})
    return InvalidArgument(op, std::string("LUT (last input) must be int32 with shape [256, 256], got ") +
                                   (lut.present ? std::string(TypeName(lut.type)) + " with shape " + ShapeString(lut.shape)
                                                : std::string("nothing")));
  if (setup.constant_plan) {
    *plan = setup.constant_plan;
  } else {
    *plan = GetLutPlan(static_cast<const int32_t*>(lut.data));
  }
  return Ort::Status{nullptr};
}

bool GetIntAttribute(const OrtApi& api, const OrtKernelInfo* info, const char* name, int64_t* value) {
  OrtStatus* status = api.KernelInfoGetAttribute_int64(info, name, value);
  if (status) api.ReleaseStatus(status);
  return status == nullptr;
}

bool GetIntsAttribute(const OrtApi& api, const OrtKernelInfo* info, const char* name, std::vector<int64_t>* value) {
  size_t size = 0;
  OrtStatus* status = api.KernelInfoGetAttributeArray_int64(info, name, nullptr, &size);
  if (status) {
    api.ReleaseStatus(status);
    return false;
  }
  value->resize(size);
  if (size == 0) return true;
  status = api.KernelInfoGetAttributeArray_int64(info, name, value->data(), &size);
  if (status) api.ReleaseStatus(status);
  return status == nullptr;
}

bool GetStringAttribute(const OrtApi& api, const OrtKernelInfo* info, const char* name, std::string* value) {
  size_t size = 0;
  OrtStatus* status = api.KernelInfoGetAttribute_string(info, name, nullptr, &size);
  if (status) {
    api.ReleaseStatus(status);
    return false;
  }
  std::string s(size, '\0');
  status = api.KernelInfoGetAttribute_string(info, name, s.data(), &size);
  if (status) {
    api.ReleaseStatus(status);
    return false;
  }
  if (!s.empty() && s.back() == '\0') s.pop_back();
  *value = s;
  return true;
}

Ort::Status LinearInput(const std::string& op, const InputTensor& linear, int64_t M, const int64_t** g) {
  *g = nullptr;
  if (!linear.present) return Ort::Status{nullptr};
  if (linear.type != ONNX_TENSOR_ELEMENT_DATA_TYPE_INT64 || linear.shape.size() != 1 || linear.shape[0] != M)
    return InvalidArgument(op, "linear must be int64 [" + std::to_string(M) + "] (one coefficient per output channel), "
                               "got " + TypeName(linear.type) + " with shape " + ShapeString(linear.shape));
  const int64_t* values = static_cast<const int64_t*>(linear.data);
  for (int64_t o = 0; o < M; ++o)
    if (values[o] <= -kLinearMaxAbs || values[o] >= kLinearMaxAbs)
      return InvalidArgument(op, "linear[" + std::to_string(o) + "] = " + std::to_string(values[o]) +
                                     " is out of range (|g| < 2^31)");
  *g = values;
  return Ort::Status{nullptr};
}

namespace {
// int32 + int64 term with int32 wrap-around, as the accumulator itself wraps.
inline int32_t WrapAdd(int32_t acc, int64_t t) {
  return static_cast<int32_t>(static_cast<uint32_t>(acc) + static_cast<uint32_t>(static_cast<uint64_t>(t)));
}
}  // namespace

void AddLinearConv(const uint8_t* x, uint8_t flip, const ConvGeometry& geo, int64_t N, int64_t G, int64_t Mg,
                   const int64_t* g, int32_t* y) {
  const int64_t HW = geo.H * geo.W, P = geo.OH * geo.OW;
  std::vector<int64_t> channel_sum(static_cast<size_t>(HW)), s(static_cast<size_t>(P));
  for (int64_t n = 0; n < N; ++n) {
    for (int64_t grp = 0; grp < G; ++grp) {
      // sum over the group's channels first, then over the taps: HW * C + P * taps additions
      std::fill(channel_sum.begin(), channel_sum.end(), 0);
      const uint8_t* xg = x + (n * G + grp) * geo.C * HW;
      for (int64_t c = 0; c < geo.C; ++c)
        for (int64_t i = 0; i < HW; ++i) channel_sum[size_t(i)] += static_cast<int8_t>(xg[c * HW + i] ^ flip);
      for (int64_t oy = 0; oy < geo.OH; ++oy)
        for (int64_t ox = 0; ox < geo.OW; ++ox) {
          int64_t total = 0;
          for (int64_t ky = 0; ky < geo.KH; ++ky) {
            const int64_t iy = oy * geo.sh - geo.ph + ky * geo.dh;
            if (iy < 0 || iy >= geo.H) continue;  // padding: a = 0
            for (int64_t kx = 0; kx < geo.KW; ++kx) {
              const int64_t ix = ox * geo.sw - geo.pw + kx * geo.dw;
              if (ix >= 0 && ix < geo.W) total += channel_sum[size_t(iy * geo.W + ix)];
            }
          }
          s[size_t(oy * geo.OW + ox)] = total;
        }
      for (int64_t m = 0; m < Mg; ++m) {
        const int64_t o = grp * Mg + m;
        int32_t* yo = y + (n * G * Mg + o) * P;
        for (int64_t p = 0; p < P; ++p) yo[p] = WrapAdd(yo[p], LinearTerm(g[o], s[size_t(p)]));
      }
    }
  }
}

void AddLinearRows(const GemmBatch& batch, const int64_t* g) {
  for (const GemmProblem& p : batch.problems) {
    for (int64_t i = 0; i < batch.I; ++i) {
      int64_t s = 0;
      for (int64_t k = 0; k < batch.K; ++k) s += p.a.At(i, k);
      for (int64_t j = 0; j < batch.J; ++j) {
        int32_t* out = p.y + i * p.ldy_i + j * p.ldy_j;
        *out = WrapAdd(*out, LinearTerm(g[j], s));
      }
    }
  }
}

namespace {
void RunTask(void* fn, size_t i) { (*static_cast<const std::function<void(size_t)>*>(fn))(i); }
}  // namespace

ParallelFor OrtParallelFor(Ort::KernelContext& ctx) {
  return [&ctx](size_t n, const std::function<void(size_t)>& fn) {
    if (n == 0) return;
    if (n == 1) {
      fn(0);
      return;
    }
    ctx.ParallelFor(RunTask, n, 0, const_cast<void*>(static_cast<const void*>(&fn)));
  };
}

}  // namespace axmoe::cpu
