#include "core/bit_decomposition.h"

#include <algorithm>
#include <array>
#include <cstdio>
#include <map>
#include <set>
#include <tuple>

namespace axmoe {
namespace {

using Mat8 = std::array<std::array<int64_t, 8>, 8>;
constexpr int64_t kBitWeight[8] = {1, 2, 4, 8, 16, 32, 64, -128};

int Popcount(uint8_t m) { return __builtin_popcount(m); }

int64_t Lut(const int32_t* lut, int a, int b) { return lut[(a + 128) * 256 + (b + 128)]; }

// Rows grouped by equal content, then each distinct non-zero value of a row group is one
// rectangle (rows of the group) x (columns holding that value).
std::vector<MaskTerm> RowGroupTerms(const Mat8& k) {
  std::vector<MaskTerm> terms;
  std::set<std::array<int64_t, 8>> seen;
  for (int i = 0; i < 8; ++i) {
    const auto& row = k[i];
    if (std::all_of(row.begin(), row.end(), [](int64_t v) { return v == 0; })) continue;
    if (!seen.insert(row).second) continue;
    uint8_t rows = 0;
    for (int r = 0; r < 8; ++r)
      if (k[r] == row) rows |= uint8_t(1u << r);
    std::set<int64_t> values(row.begin(), row.end());
    for (int64_t v : values) {
      if (v == 0) continue;
      uint8_t cols = 0;
      for (int j = 0; j < 8; ++j)
        if (row[j] == v) cols |= uint8_t(1u << j);
      terms.push_back({v, rows, cols});
    }
  }
  return terms;
}

Mat8 Transpose(const Mat8& k) {
  Mat8 t{};
  for (int i = 0; i < 8; ++i)
    for (int j = 0; j < 8; ++j) t[j][i] = k[i][j];
  return t;
}

std::vector<MaskTerm> Split(const Mat8& k) {
  std::vector<MaskTerm> by_rows = RowGroupTerms(k);
  std::vector<MaskTerm> by_cols;
  for (const MaskTerm& t : RowGroupTerms(Transpose(k))) by_cols.push_back({t.coef, t.mask_b, t.mask_a});
  return by_cols.size() < by_rows.size() ? by_cols : by_rows;
}

void Order(std::vector<MaskTerm>& terms) {
  std::stable_sort(terms.begin(), terms.end(), [](const MaskTerm& x, const MaskTerm& y) {
    return std::make_tuple(-Popcount(x.mask_a) * Popcount(x.mask_b), -int(x.mask_a), -int(x.mask_b)) <
           std::make_tuple(-Popcount(y.mask_a) * Popcount(y.mask_b), -int(y.mask_a), -int(y.mask_b));
  });
}

// Fewest terms, then fewest operand bits in the corrections (cheaper fast path).
std::pair<size_t, int> Cost(std::vector<MaskTerm> terms) {
  Order(terms);
  int bits = 0;
  for (size_t i = 1; i < terms.size(); ++i) bits += Popcount(terms[i].mask_a) + Popcount(terms[i].mask_b);
  return {terms.size(), bits};
}

std::vector<MaskTerm> SplitRectangles(const Mat8& k) {
  std::vector<MaskTerm> best = Split(k);
  std::set<int64_t> values;
  for (const auto& row : k) values.insert(row.begin(), row.end());
  for (int64_t v : values) {
    if (v == 0) continue;
    uint8_t rows = 0, cols = 0;
    for (int i = 0; i < 8; ++i)
      for (int j = 0; j < 8; ++j)
        if (k[i][j] == v) rows |= uint8_t(1u << i), cols |= uint8_t(1u << j);
    for (uint8_t ma : {rows, uint8_t(0xFF)}) {
      for (uint8_t mb : {cols, uint8_t(0xFF)}) {
        Mat8 rest = k;
        for (int i = 0; i < 8; ++i)
          for (int j = 0; j < 8; ++j)
            if ((ma >> i & 1) && (mb >> j & 1)) rest[i][j] -= v;
        std::vector<MaskTerm> candidate = {{v, ma, mb}};
        for (const MaskTerm& t : Split(rest)) candidate.push_back(t);
        if (Cost(candidate) < Cost(best)) best = candidate;
      }
    }
  }
  Order(best);
  return best;
}

}  // namespace

std::string BitDecomposition::Formula() const {
  if (!exact) return "none (" + reason + ")";
  std::string s;
  char buf[64];
  for (const MaskTerm& t : terms) {
    std::snprintf(buf, sizeof buf, "%s%+lld*(a&0x%02X)*(b&0x%02X)", s.empty() ? "" : " ",
                  static_cast<long long>(t.coef), t.mask_a, t.mask_b);
    s += buf;
  }
  return s.empty() ? "0" : s;
}

BitDecomposition DecomposeLut(const int32_t* lut) {
  BitDecomposition result;
  const int points[9] = {0, 1, 2, 4, 8, 16, 32, 64, -128};
  int64_t w9[9][9];
  for (int i = 0; i < 9; ++i)
    for (int j = 0; j < 9; ++j)
      w9[i][j] = Lut(lut, points[i], points[j]) - (j ? Lut(lut, points[i], 0) : 0) -
                 (i ? Lut(lut, 0, points[j]) : 0) + (i && j ? Lut(lut, 0, 0) : 0);
  // Rebuild every entry from the bilinear form: r(a)_j = sum_i f_i(a) W9[i][j].
  int64_t mismatches = 0;
  for (int a = -128; a < 128; ++a) {
    int64_t r[9];
    for (int j = 0; j < 9; ++j) {
      r[j] = w9[0][j];
      for (int i = 0; i < 8; ++i)
        if ((static_cast<uint8_t>(a) >> i) & 1) r[j] += w9[i + 1][j];
    }
    for (int b = -128; b < 128; ++b) {
      int64_t v = r[0];
      for (int j = 0; j < 8; ++j)
        if ((static_cast<uint8_t>(b) >> j) & 1) v += r[j + 1];
      mismatches += v != Lut(lut, a, b);
    }
  }
  if (mismatches) {
    result.reason = "not bilinear in the operand bits (" + std::to_string(mismatches) +
                    " of 65536 pairs differ from the bilinear form)";
    return result;
  }
  for (int i = 0; i < 9; ++i) {
    if (w9[0][i] || w9[i][0]) {
      result.reason = "bilinear, but with constant or single-operand terms";
      return result;
    }
  }
  Mat8 k{};
  for (int i = 0; i < 8; ++i) {
    for (int j = 0; j < 8; ++j) {
      const int64_t weight = kBitWeight[i] * kBitWeight[j];
      if (w9[i + 1][j + 1] % weight) {
        result.reason = "bilinear, but some bit-product coefficients are not multiples of their weights";
        return result;
      }
      k[i][j] = w9[i + 1][j + 1] / weight;
    }
  }
  result.terms = SplitRectangles(k);
  for (int a = -128; a < 128; ++a) {
    for (int b = -128; b < 128; ++b) {
      int64_t v = 0;
      for (const MaskTerm& t : result.terms) v += EvaluateTerm(t, a, b);
      if (v != Lut(lut, a, b)) {
        result.terms.clear();
        result.reason = "rectangle split failed verification";  // cannot happen if the algebra holds
        return result;
      }
    }
  }
  result.exact = true;
  return result;
}

}  // namespace axmoe
