// Everything the kernels need from one multiplier LUT, computed once per distinct table.
//
//   lut[(a + 128) * 256 + (b + 128)] = mul(a, b),    a: activation, b: weight
//
// General path tables (any LUT): by_weight[b + 128][a + 128] = lut[a][b] (lanes over
// activations, one table per weight value) and by_act = lut itself (lanes over weights),
// plus their int16 byte planes when every entry fits int16.
// Decomposed path (when the LUT is an exact sum of masked products, see bit_decomposition.h
// and each term's weight operand c_t * (b & mb_t) fits int8): per-term activation masks and
// a 256-entry int8 table of weight operands.
//
// GetLutPlan caches plans by table content (a hash, then a full compare), so a LUT shared
// by many nodes, or fed at run time, is analysed once per process.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/aligned_buffer.h"
#include "core/bit_decomposition.h"

namespace axmoe {

struct LutPlan {
  std::vector<int32_t> lut;            // [256 * 256], a copy
  AlignedBuffer<int32_t> by_weight;    // [256 b][256 a]
  AlignedBuffer<uint8_t> planes_by_weight;  // [256 b][2][256 a] (low, high byte)
  AlignedBuffer<uint8_t> planes_by_act;     // [256 a][2][256 b]
  bool fits_int16 = false;

  BitDecomposition decomposition;
  bool dot_ok = false;                // decomposed path usable
  std::string dot_reason;             // why not
  std::vector<uint8_t> dot_masks;     // [terms] activation masks
  std::vector<std::array<int8_t, 256>> dot_beta;  // [terms][b + 128] = c_t * int8(b & mb_t)
  // The same terms with the operands' roles swapped (weights masked in the kernel, the
  // activation side folded to c_t * int8(a & ma_t)), for GEMMs whose weight dimension makes
  // better lanes; ok when every folded activation fits int8.
  bool dot_swapped_ok = false;
  std::vector<uint8_t> dot_masks_swapped;  // [terms] weight masks

  // Correction table: the terms whose activation mask lies in one 4-bit window
  // (bits ct_shift .. ct_shift + 3), summed into one int8 function of that nibble,
  //   g(x, b) = sum_{t in window} c_t * int8((x << ct_shift) & ma_t) * int8(b & mb_t),
  // looked up per product (vpermb) instead of one dot product per term. The other terms
  // stay dot-product terms (ct_masks / ct_beta). ok when >= 3 terms fit and |g| <= 127.
  bool ct_ok = false;
  uint8_t ct_shift = 0;
  size_t ct_group = 1;                                 // k4 steps whose int8 sums of g cannot overflow
  std::vector<uint8_t> ct_masks;                       // [other terms] activation masks
  std::vector<std::array<int8_t, 256>> ct_beta;        // [other terms][b + 128]
  std::vector<std::array<int8_t, 16>> ct_table;        // [b + 128][x] = g(x, b)

  const int32_t* by_act() const { return lut.data(); }
  std::string Describe() const;       // one line: path and formula or reason
};

// Most terms the decomposed path takes before the general path is cheaper.
constexpr size_t kMaxDotTerms = 8;

// lut: int32 [256 * 256]. Thread-safe.
std::shared_ptr<const LutPlan> GetLutPlan(const int32_t* lut);

}  // namespace axmoe
