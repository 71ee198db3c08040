// axmoe.ApproxConvInteger: ONNX ConvInteger with every product looked up in a LUT.
//
//   inputs  x [N, C, L] or [N, C, H, W]   uint8 (zero point 128) or int8 (zero point 0)
//           w [M, C / group, kL] or [M, C / group, kH, kW]   int8, zero point 0
//           x_zero_point (optional, scalar), w_zero_point (optional, scalar or [M])
//           LUT int32 [256, 256]
//           linear (optional, int64 [M]): the linear compensation term's coefficients g
//   output  y [N, M, OL] or [N, M, OH, OW] int32
//   y[n, g*Mg + m, oy, ox] = sum_{c < Cg, ky, kx} LUT[a + 128, w[g*Mg + m, c, ky, kx] + 128],
//       a = x[n, g*Cg + c, oy*sh - pt + ky*dh, ox*sw - pl + kx*dw] - x_zero_point
//       (0 outside the image: ConvInteger pads with the zero point)
//       + floor((g[o] * S + 2^15) / 2^16) when `linear` is given, o = g*Mg + m and S the sum
//       of a over the same receptive field (op_util.h, LinearTerm)
// Attributes as ConvInteger: auto_pad (NOTSET, SAME_UPPER, SAME_LOWER, VALID), dilations,
// group, kernel_shape, pads, strides. A 1-D conv runs as a 2-D one with H = kH = 1.
//
// Kernel API: Ort::CustomOpBase rather than the Lite API, because x's dtype is only known
// at run time (uint8 or int8) and ONNX marks omitted zero points with empty input names in
// the middle of the list, which the Lite API's tensor arguments do not model.
#include <algorithm>
#include <memory>
#include <string>
#include <vector>

#include "core/approx_gemm.h"
#include "cpu/cpu_ops.h"
#include "cpu/op_util.h"

namespace axmoe::cpu {
namespace {

const std::string kOp = "ApproxConvInteger";

struct ConvAttributes {
  std::string auto_pad = "NOTSET";
  std::vector<int64_t> dilations, kernel_shape, pads, strides;
  int64_t group = 1;
};

struct ConvKernel {
  ConvAttributes attrs;
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

// Output size and leading pad of one spatial axis, or an error.
Ort::Status Axis(const ConvAttributes& at, size_t axis, size_t spatial, int64_t in, int64_t k, int64_t* out,
                 int64_t* pad_begin, const std::vector<int64_t>& x_shape, const std::vector<int64_t>& w_shape) {
  const int64_t s = at.strides.empty() ? 1 : at.strides[axis];
  const int64_t d = at.dilations.empty() ? 1 : at.dilations[axis];
  int64_t pb = at.pads.empty() ? 0 : at.pads[axis], pe = at.pads.empty() ? 0 : at.pads[axis + spatial];
  const int64_t extent = d * (k - 1) + 1;
  if (at.auto_pad == "VALID") {
    pb = pe = 0;
  } else if (at.auto_pad == "SAME_UPPER" || at.auto_pad == "SAME_LOWER") {
    const int64_t target = (in + s - 1) / s;
    const int64_t total = std::max<int64_t>(0, (target - 1) * s + extent - in);
    pb = at.auto_pad == "SAME_UPPER" ? total / 2 : total - total / 2;
    pe = total - pb;
  }
  const int64_t padded = in + pb + pe;
  if (padded < extent)
    return InvalidArgument(kOp, "kernel " + ShapeString(w_shape) + " (dilated extent " + std::to_string(extent) +
                                    ") does not fit input " + ShapeString(x_shape) + " padded to " +
                                    std::to_string(padded) + " on spatial axis " + std::to_string(axis));
  *out = (padded - extent) / s + 1;
  *pad_begin = pb;
  return Ort::Status{nullptr};
}

Ort::Status ConvKernel::Compute(OrtKernelContext* context) {
  Ort::KernelContext ctx(context);
  if (ctx.GetInputCount() != 5 && ctx.GetInputCount() != 6)
    return InvalidArgument(kOp, "expects 5 or 6 inputs (x, w, x_zero_point, w_zero_point, LUT, linear; empty names "
                                "for omitted zero points), got " + std::to_string(ctx.GetInputCount()));
  const InputTensor x = GetInput(ctx, 0), w = GetInput(ctx, 1), xzp = GetInput(ctx, 2), wzp = GetInput(ctx, 3),
                    lut = GetInput(ctx, 4);
  if (!x.present || !w.present) return InvalidArgument(kOp, "x and w are required");
  uint8_t flip = 0;
  if (auto s = ActivationFlip(kOp, "x", x, xzp, -1, &flip); !s.IsOK()) return s;
  const int64_t M = w.shape.empty() ? 0 : w.shape[0];
  if (auto s = CheckWeight(kOp, "w", w, wzp, M); !s.IsOK()) return s;
  const int64_t* linear = nullptr;
  if (auto s = LinearInput(kOp, GetInput(ctx, 5), M, &linear); !s.IsOK()) return s;

  const size_t rank = x.shape.size();
  if ((rank != 3 && rank != 4) || w.shape.size() != rank)
    return InvalidArgument(kOp, "x and w must both be 3-D (1-D conv) or 4-D (2-D conv), got x " +
                                    ShapeString(x.shape) + " and w " + ShapeString(w.shape));
  const size_t spatial = rank - 2;
  const ConvAttributes& at = attrs;
  if ((!at.strides.empty() && at.strides.size() != spatial) || (!at.dilations.empty() && at.dilations.size() != spatial) ||
      (!at.pads.empty() && at.pads.size() != 2 * spatial) || (!at.kernel_shape.empty() && at.kernel_shape.size() != spatial))
    return InvalidArgument(kOp, "strides, dilations and kernel_shape need " + std::to_string(spatial) +
                                    " values and pads " + std::to_string(2 * spatial) + " for x " + ShapeString(x.shape));
  if (!at.kernel_shape.empty() && !std::equal(at.kernel_shape.begin(), at.kernel_shape.end(), w.shape.begin() + 2))
    return InvalidArgument(kOp, "kernel_shape " + ShapeString(at.kernel_shape) + " does not match w " + ShapeString(w.shape));
  const int64_t N = x.shape[0], C = x.shape[1], G = at.group;
  if (G < 1 || C % G || M % G || w.shape[1] * G != C)
    return InvalidArgument(kOp, "group=" + std::to_string(G) + " does not fit x " + ShapeString(x.shape) + " and w " +
                                    ShapeString(w.shape) + " (need C % group == 0, M % group == 0, w.shape[1] == C / group)");
  for (int64_t v : x.shape)
    if (v < 0) return InvalidArgument(kOp, "x has a negative dimension: " + ShapeString(x.shape));
  for (size_t i = 1; i < rank; ++i)
    if (w.shape[i] < 1) return InvalidArgument(kOp, "w has an empty dimension: " + ShapeString(w.shape));

  ConvGeometry g{};
  g.C = C / G;
  g.H = spatial == 2 ? x.shape[2] : 1;
  g.W = x.shape[rank - 1];
  g.KH = spatial == 2 ? w.shape[2] : 1;
  g.KW = w.shape[rank - 1];
  g.sh = g.dh = 1;
  g.ph = 0;
  g.OH = 1;
  int64_t out_w = 0, pad_w = 0;
  if (spatial == 2) {
    if (auto s = Axis(at, 0, 2, g.H, g.KH, &g.OH, &g.ph, x.shape, w.shape); !s.IsOK()) return s;
    g.sh = at.strides.empty() ? 1 : at.strides[0];
    g.dh = at.dilations.empty() ? 1 : at.dilations[0];
  }
  if (auto s = Axis(at, spatial - 1, spatial, g.W, g.KW, &out_w, &pad_w, x.shape, w.shape); !s.IsOK()) return s;
  g.OW = out_w;
  g.pw = pad_w;
  g.sw = at.strides.empty() ? 1 : at.strides[spatial - 1];
  g.dw = at.dilations.empty() ? 1 : at.dilations[spatial - 1];

  std::vector<int64_t> y_shape = {N, M};
  if (spatial == 2) y_shape.push_back(g.OH);
  y_shape.push_back(g.OW);
  int32_t* y = ctx.GetOutput(0, y_shape).GetTensorMutableData<int32_t>();
  std::shared_ptr<const LutPlan> plan;
  if (auto s = LutPlanFor(kOp, setup, lut, &plan); !s.IsOK()) return s;
  if (N == 0 || M == 0) return Ort::Status{nullptr};

  const int64_t Mg = M / G, K = g.C * g.KH * g.KW, P = g.OH * g.OW, HW = g.H * g.W;
  GemmBatch batch;
  batch.I = P;
  batch.J = Mg;
  batch.K = K;
  const uint8_t* xd = static_cast<const uint8_t*>(x.data);
  const uint8_t* wd = static_cast<const uint8_t*>(w.data);
  for (int64_t grp = 0; grp < G; ++grp) {
    OperandView wv;
    wv.data = wd + grp * Mg * K;
    wv.stride_r = K;
    wv.stride_k = 1;
    batch.weights.push_back(wv);
  }
  for (int64_t n = 0; n < N; ++n) {
    for (int64_t grp = 0; grp < G; ++grp) {
      GemmProblem p;
      p.a.data = xd + (n * C + grp * g.C) * HW;
      p.a.flip = flip;
      p.a.im2col = true;
      p.a.geo = &g;
      p.weight = size_t(grp);
      p.y = y + (n * M + grp * Mg) * P;
      p.ldy_i = 1;
      p.ldy_j = P;
      batch.problems.push_back(p);
    }
  }
  GemmOptions options;
  options.variant = setup.choice.variant;
  options.path = setup.choice.path;
  const std::string error = RunApproxGemm(batch, plan, options, OrtParallelFor(ctx),
                                          setup.constant_weights ? &weight_cache : nullptr);
  if (!error.empty()) return InvalidArgument(kOp, error);
  if (linear != nullptr) AddLinearConv(xd, flip, g, N, G, Mg, linear, y);
  return Ort::Status{nullptr};
}

struct ConvOp : Ort::CustomOpBase<ConvOp, ConvKernel, true> {
  explicit ConvOp(const KernelChoice& choice) : choice(choice) {}
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
    auto k = std::make_unique<ConvKernel>();
    ConvAttributes& at = k->attrs;
    GetStringAttribute(api, info, "auto_pad", &at.auto_pad);
    GetIntsAttribute(api, info, "dilations", &at.dilations);
    GetIntsAttribute(api, info, "kernel_shape", &at.kernel_shape);
    GetIntsAttribute(api, info, "pads", &at.pads);
    GetIntsAttribute(api, info, "strides", &at.strides);
    GetIntAttribute(api, info, "group", &at.group);
    if (at.auto_pad != "NOTSET" && at.auto_pad != "VALID" && at.auto_pad != "SAME_UPPER" && at.auto_pad != "SAME_LOWER")
      return InvalidArgument(kOp, "auto_pad must be NOTSET, VALID, SAME_UPPER or SAME_LOWER, got '" + at.auto_pad + "'")
          .release();
    for (int64_t v : at.strides)
      if (v < 1) return InvalidArgument(kOp, "strides must be >= 1, got " + ShapeString(at.strides)).release();
    for (int64_t v : at.dilations)
      if (v < 1) return InvalidArgument(kOp, "dilations must be >= 1, got " + ShapeString(at.dilations)).release();
    for (int64_t v : at.pads)
      if (v < 0) return InvalidArgument(kOp, "pads must be >= 0, got " + ShapeString(at.pads)).release();
    k->setup = ReadKernelSetup(choice, api, info, 1, 4);
    *kernel = k.release();
    return nullptr;
  }
  const char* GetName() const { return "ApproxConvInteger"; }
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

OrtCustomOp* CreateApproxConvInteger(const KernelChoice& choice) { return new ConvOp(choice); }

}  // namespace axmoe::cpu
