// Exact split of a LUT into products of bit-masked operands, solved from the table itself
// (the C++ twin of multipliers/decompose.py; same algebra, its own search).
//
// With f(x) = [1, bit_0(x), ..., bit_7(x)] (two's-complement bits of a signed byte), a LUT
// is bilinear in the operand bits when lut(a, b) = f(a)^T W9 f(b) for an integer 9x9 W9.
// W9 follows from the 81 entries at x in {0, 1, 2, ..., 64, -128}, where f(x) is the
// unimodular F = [[1, 0], [1, I]]:  W9 = F^-1 L F^-T. When W9 has no constant or
// single-operand part and W9[i][j] = K[i][j] w_i w_j (w_i = 2^i, w_7 = -2^7, K integer),
//
//     lut(a, b) = sum_t c_t * (a & ma_t) * (b & mb_t)                       (1)
//
// for any split of K into signed rectangles sum_t c_t 1[ma_t] 1[mb_t]^T. The split found
// groups equal rows (or columns) of K, optionally after taking out one main rectangle, and
// keeps the fewest terms. Every result is verified on all 65,536 operand pairs.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace axmoe {

struct MaskTerm {
  int64_t coef;
  uint8_t mask_a;
  uint8_t mask_b;
};

struct BitDecomposition {
  bool exact = false;
  std::vector<MaskTerm> terms;  // main product first
  std::string reason;           // why not, when !exact

  std::string Formula() const;  // e.g. "+1*(a&0xFF)*(b&0xFF) -1*(a&0x01)*(b&0x0F)"
};

// lut: int32 [256][256], lut[(a + 128) * 256 + (b + 128)] = mul(a, b).
BitDecomposition DecomposeLut(const int32_t* lut);

// Value of term t at (a, b), as the oracle defines it (bit 7 of a masked operand weighs -128).
inline int64_t EvaluateTerm(const MaskTerm& t, int a, int b) {
  return t.coef * static_cast<int8_t>(static_cast<uint8_t>(a) & t.mask_a) *
         static_cast<int8_t>(static_cast<uint8_t>(b) & t.mask_b);
}

}  // namespace axmoe
