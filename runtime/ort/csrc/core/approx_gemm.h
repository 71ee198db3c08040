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
// Paths: decomposed (plan.dot_ok) packs activations [K/4][lanes][4] and runs the dot
// kernel once per term; general LUT packs indices K-major with lanes over whichever of I or
// J wastes fewer of the 64-lane vectors, and looks products up in the plan's tables.
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
