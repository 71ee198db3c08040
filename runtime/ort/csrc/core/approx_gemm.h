// The approximate GEMM both ops reduce to, split into tiles that run in parallel.
//
//     Y[i][j] = sum_{k < K} lut[a(i, k) + 128][b(j, k) + 128]      (int32, wrapping)
//
// a: activations [I][K] (conv: im2col of one image and group; matmul: rows of A),
// b: weights [J][K] (conv: filters of the group; matmul: columns of B). One GemmBatch holds
// every problem of an op call (conv: N x group; matmul: the broadcast batch) over a shared
// list of weight views. Tiles cover (problem, panel of lanes, block of output rows), so one
// image still spreads over all threads.
//
// Paths (chosen per call from the plan and the session's axmoe.path, see kernel_select.h):
//   decomposed (plan.dot_ok): int8 dot products per term of the LUT's masked-product split.
//     Conv: lanes over output positions, activations from a channel-interleaved padded image
//     (conv_c4.h), weights folded per term once. MatMul: lanes over I or J, whichever pads
//     less; with lanes over J the operands' roles swap (weights masked in the kernel,
//     activations folded per tile).
//   general LUT (any table): indices packed K-major with lanes over I (tables indexed by
//     weights) or J (tables indexed by activations), products looked up in the plan's tables.
// Weight-side packing is done once per call, or once per node when the weights are
// initializers (WeightCache).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "core/kernel_select.h"
#include "core/lut_plan.h"
#include "core/operand_pack.h"

namespace axmoe {

struct GemmProblem {
  OperandView a;         // [I][K]
  size_t weight = 0;     // index into GemmBatch::weights
  int32_t* y = nullptr;  // Y[i][j] at y[i * ldy_i + j * ldy_j]
  int64_t ldy_i = 0, ldy_j = 0;
};

struct GemmBatch {
  int64_t I = 0, J = 0, K = 0;
  std::vector<OperandView> weights;  // each [J][K]
  std::vector<GemmProblem> problems;
};

// Runs fn(0), ..., fn(n - 1), possibly in parallel; fn must not throw.
using ParallelFor = std::function<void(size_t n, const std::function<void(size_t)>& fn)>;
void SerialFor(size_t n, const std::function<void(size_t)>& fn);

// Weight-side operands laid out for one path, reusable across calls when the weights are
// constant initializers (the op keeps one cache per node).
struct PreparedWeights;
class WeightCache {
 public:
  std::shared_ptr<const PreparedWeights> Find(const LutPlan* plan, int mode);
  void Store(std::shared_ptr<const PreparedWeights> prepared);

 private:
  std::mutex mutex_;
  std::vector<std::shared_ptr<const PreparedWeights>> entries_;
};

struct GemmOptions {
  const KernelVariant* variant = nullptr;
  PathChoice path = PathChoice::kAuto;
  size_t min_tasks = 0;  // 0: twice the hardware threads
};

// Returns "" on success, else why nothing was computed.
std::string RunApproxGemm(const GemmBatch& batch, const std::shared_ptr<const LutPlan>& plan,
                          const GemmOptions& options, const ParallelFor& parallel_for,
                          WeightCache* cache = nullptr);

}  // namespace axmoe
