// axmoe.ApproxMatMulInteger: ONNX MatMulInteger with every product looked up in a LUT.
//
//   inputs  A [..., M, K]  uint8 (zero point 128) or int8 (zero point 0)
//           B [..., K, N]  int8, zero point 0
//           a_zero_point (optional, scalar or [M]), b_zero_point (optional, scalar or [N])
//           LUT int32 [256, 256]
//           linear (optional, int64 [N]): the linear compensation term's coefficients g
//   output  Y [..., M, N] int32, batch dims broadcast as numpy.matmul
//   Y[..., m, n] = sum_k LUT[A[..., m, k] - a_zero_point + 128, B[..., k, n] + 128]
//                  + floor((g[n] * S + 2^15) / 2^16) when `linear` is given,
//                  S = sum_k (A[..., m, k] - a_zero_point) (op_util.h, LinearTerm)
// A 1-D A is [1, K] and a 1-D B is [K, 1], with the added dim dropped from Y (numpy rules).
#include <algorithm>
#include <memory>
#include <string>
#include <vector>

#include "core/approx_gemm.h"
#include "cpu/cpu_ops.h"
#include "cpu/op_util.h"

namespace axmoe::cpu {
namespace {

const std::string kOp = "ApproxMatMulInteger";

struct MatMulKernel {
  KernelSetup setup;
  WeightCache weight_cache;

  // Exceptions (onnxruntime API errors, allocation failures) become statuses here: none may
  // unwind into onnxruntime's C code.
  OrtStatusPtr ComputeV2(OrtKernelContext* context) {
    try {
      return Compute(context).release();
    } catch (const Ort::Exception& e) {
      return Ort::Status(e).release();
    } catch (const std::exception& e) {
      return Ort::Status((kOp + ": " + e.what()).c_str(), ORT_FAIL).release();
    }
  }
  Ort::Status Compute(OrtKernelContext* context);
};

Ort::Status MatMulKernel::Compute(OrtKernelContext* context) {
  Ort::KernelContext ctx(context);
  if (ctx.GetInputCount() != 5 && ctx.GetInputCount() != 6)
    return InvalidArgument(kOp, "expects 5 or 6 inputs (A, B, a_zero_point, b_zero_point, LUT, linear; empty names "
                                "for omitted zero points), got " + std::to_string(ctx.GetInputCount()));
  const InputTensor A = GetInput(ctx, 0), B = GetInput(ctx, 1), azp = GetInput(ctx, 2), bzp = GetInput(ctx, 3),
                    lut = GetInput(ctx, 4);
  if (!A.present || !B.present) return InvalidArgument(kOp, "A and B are required");
  if (A.shape.empty() || B.shape.empty())
    return InvalidArgument(kOp, "A and B must have at least 1 dimension, got A " + ShapeString(A.shape) + " and B " +
                                    ShapeString(B.shape));
  std::vector<int64_t> a_shape = A.shape, b_shape = B.shape;
  const bool a_vec = a_shape.size() == 1, b_vec = b_shape.size() == 1;
  if (a_vec) a_shape.insert(a_shape.begin(), 1);
  if (b_vec) b_shape.push_back(1);
  const int64_t M = a_shape[a_shape.size() - 2], K = a_shape.back(), N = b_shape.back();
  uint8_t flip = 0;
  if (auto s = ActivationFlip(kOp, "a", A, azp, M, &flip); !s.IsOK()) return s;
  if (auto s = CheckWeight(kOp, "b", B, bzp, N); !s.IsOK()) return s;
  const int64_t* linear = nullptr;
  if (auto s = LinearInput(kOp, GetInput(ctx, 5), N, &linear); !s.IsOK()) return s;
  if (b_shape[b_shape.size() - 2] != K)
    return InvalidArgument(kOp, "A " + ShapeString(A.shape) + " and B " + ShapeString(B.shape) +
                                    " do not align: A's last dim must equal B's second-to-last");

  // Broadcast batch dims (right-aligned), with element strides of A and B per batch dim.
  const size_t a_batch = a_shape.size() - 2, b_batch = b_shape.size() - 2;
  const size_t nb = std::max(a_batch, b_batch);
  std::vector<int64_t> batch(nb), a_stride(nb, 0), b_stride(nb, 0);
  int64_t as = M * K, bs = K * N;
  for (size_t i = 0; i < nb; ++i) {
    const size_t d = nb - 1 - i;  // from the right
    const int64_t ad = i < a_batch ? a_shape[a_batch - 1 - i] : 1;
    const int64_t bd = i < b_batch ? b_shape[b_batch - 1 - i] : 1;
    if (ad != bd && ad != 1 && bd != 1)
      return InvalidArgument(kOp, "batch dims of A " + ShapeString(A.shape) + " and B " + ShapeString(B.shape) +
                                      " do not broadcast");
    batch[d] = ad == 1 ? bd : ad;
    a_stride[d] = ad == 1 ? 0 : as;
    b_stride[d] = bd == 1 ? 0 : bs;
    as *= ad;
    bs *= bd;
  }
  std::vector<int64_t> y_shape(batch);
  if (!a_vec) y_shape.push_back(M);
  if (!b_vec) y_shape.push_back(N);
  int32_t* y = ctx.GetOutput(0, y_shape).GetTensorMutableData<int32_t>();
  std::shared_ptr<const LutPlan> plan;
  if (auto s = LutPlanFor(kOp, setup, lut, &plan); !s.IsOK()) return s;
  int64_t count = 1;
  for (int64_t d : batch) count *= d;
  if (count == 0 || M == 0 || N == 0) return Ort::Status{nullptr};

  GemmBatch gemm;
  gemm.I = M;
  gemm.J = N;
  gemm.K = K;
  // One B for the whole batch: A's batch is just more rows of one GEMM (longer lanes).
  int64_t b_count = 1;
  for (size_t d = 0; d < b_batch; ++d) b_count *= b_shape[d];
  if (b_count == 1) {
    gemm.I = count * M;
    count = 1;
  }
  const uint8_t* ad = static_cast<const uint8_t*>(A.data);
  const uint8_t* bd = static_cast<const uint8_t*>(B.data);
  // One weight view per B matrix; broadcasting only repeats them.
  for (int64_t i = 0; i < b_count; ++i) {
    OperandView bv;
    bv.data = bd + i * K * N;
    bv.stride_r = 1;  // rows j = columns n of B
    bv.stride_k = N;
    gemm.weights.push_back(bv);
  }
  for (int64_t index = 0; index < count; ++index) {
    int64_t a_off = 0, b_off = 0, rest = index;
    for (size_t d = nb; d-- > 0;) {
      const int64_t i = rest % batch[d];
      rest /= batch[d];
      a_off += i * a_stride[d];
      b_off += i * b_stride[d];
    }
    GemmProblem p;
    p.a.data = ad + a_off;
    p.a.flip = flip;
    p.a.stride_r = K;
    p.a.stride_k = 1;
    p.weight = K > 0 && N > 0 ? size_t(b_off / (K * N)) : 0;
    p.y = y + index * gemm.I * N;
    p.ldy_i = N;
    p.ldy_j = 1;
    gemm.problems.push_back(p);
  }
  GemmOptions options;
  options.variant = setup.choice.variant;
  options.path = setup.choice.path;
  const std::string error = RunApproxGemm(gemm, plan, options, OrtParallelFor(ctx),
                                          setup.constant_weights ? &weight_cache : nullptr);
  if (!error.empty()) return InvalidArgument(kOp, error);
  if (linear != nullptr) AddLinearRows(gemm, linear);
  return Ort::Status{nullptr};
}

struct MatMulOp : Ort::CustomOpBase<MatMulOp, MatMulKernel, true> {
  explicit MatMulOp(const KernelChoice& choice) : choice(choice) {}
  KernelChoice choice;  // of every session registered with this op

  OrtStatusPtr CreateKernelV2(const OrtApi& api, const OrtKernelInfo* info, void** kernel) const {
    try {
      return Create(api, info, kernel);
    } catch (const Ort::Exception& e) {
      return Ort::Status(e).release();
    } catch (const std::exception& e) {
      return Ort::Status((kOp + ": " + e.what()).c_str(), ORT_FAIL).release();
    }
  }
  OrtStatusPtr Create(const OrtApi& api, const OrtKernelInfo* info, void** kernel) const {
    auto k = std::make_unique<MatMulKernel>();
    k->setup = ReadKernelSetup(choice, api, info, 1, 4);
    *kernel = k.release();
    return nullptr;
  }
  const char* GetName() const { return "ApproxMatMulInteger"; }
  const char* GetExecutionProviderType() const { return "CPUExecutionProvider"; }
  size_t GetInputTypeCount() const { return 6; }
  ONNXTensorElementDataType GetInputType(size_t) const { return ONNX_TENSOR_ELEMENT_DATA_TYPE_UNDEFINED; }
  OrtCustomOpInputOutputCharacteristic GetInputCharacteristic(size_t i) const {
    return i == 2 || i == 3 || i == 5 ? INPUT_OUTPUT_OPTIONAL : INPUT_OUTPUT_REQUIRED;
  }
  size_t GetOutputTypeCount() const { return 1; }
  ONNXTensorElementDataType GetOutputType(size_t) const { return ONNX_TENSOR_ELEMENT_DATA_TYPE_INT32; }
};

}  // namespace

OrtCustomOp* CreateApproxMatMulInteger(const KernelChoice& choice) { return new MatMulOp(choice); }

}  // namespace axmoe::cpu
