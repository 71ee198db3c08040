#include "core/operand_pack.h"

#include <algorithm>
#include <cstring>

namespace axmoe {
namespace {

inline int64_t CeilDiv(int64_t a, int64_t b) { return a >= 0 ? (a + b - 1) / b : -((-a) / b); }
inline int64_t FloorDiv(int64_t a, int64_t b) { return a >= 0 ? a / b : -((-a + b - 1) / b); }

// One column k of an im2col panel: positions r0 .. r0 + nr, as index bytes.
void Im2colColumn(const OperandView& v, int64_t r0, int64_t nr, int64_t k, uint8_t* out) {
  const ConvGeometry& g = *v.geo;
  const int64_t c = k / (g.KH * g.KW), ky = (k / g.KW) % g.KH, kx = k % g.KW;
  const uint8_t flip = v.flip ^ 0x80;
  // Output columns whose tap lands inside the image row: 0 <= ox * sw - pw + kx * dw < W.
  const int64_t off = kx * g.dw - g.pw;
  const int64_t ox_lo = std::max<int64_t>(0, CeilDiv(-off, g.sw));
  const int64_t ox_hi = std::min<int64_t>(g.OW, FloorDiv(g.W - 1 - off, g.sw) + 1);  // exclusive
  int64_t r = r0;
  const int64_t r_end = r0 + nr;
  while (r < r_end) {
    const int64_t oy = r / g.OW, ox0 = r % g.OW;
    const int64_t ox1 = std::min<int64_t>(g.OW, ox0 + (r_end - r));
    uint8_t* o = out + (r - r0);
    const int64_t iy = oy * g.sh - g.ph + ky * g.dh;
    if (iy < 0 || iy >= g.H || ox_lo >= ox_hi) {
      std::memset(o, 0x80, size_t(ox1 - ox0));
    } else {
      const uint8_t* row = v.data + (c * g.H + iy) * g.W;
      const int64_t a = std::clamp(ox_lo, ox0, ox1), b = std::clamp(ox_hi, ox0, ox1);
      std::memset(o, 0x80, size_t(a - ox0));
      if (g.sw == 1) {
        for (int64_t ox = a; ox < b; ++ox) o[ox - ox0] = row[ox + off] ^ flip;
      } else {
        for (int64_t ox = a; ox < b; ++ox) o[ox - ox0] = row[ox * g.sw + off] ^ flip;
      }
      std::memset(o + (b - ox0), 0x80, size_t(ox1 - b));
    }
    r += ox1 - ox0;
  }
}

}  // namespace

int8_t OperandView::At(int64_t r, int64_t k) const {
  if (!im2col) return static_cast<int8_t>(data[r * stride_r + k * stride_k] ^ flip);
  const ConvGeometry& g = *geo;
  const int64_t c = k / (g.KH * g.KW), ky = (k / g.KW) % g.KH, kx = k % g.KW;
  const int64_t iy = (r / g.OW) * g.sh - g.ph + ky * g.dh;
  const int64_t ix = (r % g.OW) * g.sw - g.pw + kx * g.dw;
  if (iy < 0 || iy >= g.H || ix < 0 || ix >= g.W) return 0;
  return static_cast<int8_t>(data[(c * g.H + iy) * g.W + ix] ^ flip);
}

void PackIndexKMajor(const OperandView& v, int64_t r0, int64_t nr, int64_t K, size_t lanes, uint8_t* out) {
  const uint8_t flip = v.flip ^ 0x80;
  for (int64_t k = 0; k < K; ++k) {
    uint8_t* o = out + size_t(k) * lanes;
    if (v.im2col) {
      Im2colColumn(v, r0, nr, k, o);
    } else {
      const uint8_t* src = v.data + r0 * v.stride_r + k * v.stride_k;
      if (v.stride_r == 1) {
        for (int64_t l = 0; l < nr; ++l) o[l] = src[l] ^ flip;
      } else {
        for (int64_t l = 0; l < nr; ++l) o[l] = src[l * v.stride_r] ^ flip;
      }
    }
    std::memset(o + nr, 0x80, lanes - size_t(nr));
  }
}

void PackIndexRows(const OperandView& v, int64_t r0, int64_t nr, int64_t K, size_t ld, uint8_t* out) {
  for (int64_t t = 0; t < nr; ++t) {
    uint8_t* o = out + size_t(t) * ld;
    if (!v.im2col && v.stride_k == 1) {
      const uint8_t* src = v.data + (r0 + t) * v.stride_r;
      const uint8_t flip = v.flip ^ 0x80;
      for (int64_t k = 0; k < K; ++k) o[k] = src[k] ^ flip;
    } else {
      for (int64_t k = 0; k < K; ++k) o[k] = static_cast<uint8_t>(v.At(r0 + t, k)) ^ 0x80;
    }
  }
}

void PackActK4(const OperandView& v, int64_t r0, int64_t nr, int64_t K, size_t lanes, int8_t* out,
               uint8_t* scratch) {
  const size_t k4 = size_t(K + 3) / 4;
  if (!v.im2col && v.stride_k == 1) {
    // Rows already hold consecutive k: copy 4 at a time.
    const uint32_t flip = v.flip * 0x01010101u;
    const size_t full = size_t(K) / 4;
    for (size_t l = 0; l < lanes; ++l) {
      int8_t* o = out + l * 4;
      if (int64_t(l) >= nr) {
        for (size_t q = 0; q < k4; ++q) std::memset(o + q * lanes * 4, 0, 4);
        continue;
      }
      const uint8_t* src = v.data + (r0 + int64_t(l)) * v.stride_r;
      for (size_t q = 0; q < full; ++q) {
        uint32_t d;
        std::memcpy(&d, src + 4 * q, 4);
        d ^= flip;
        std::memcpy(o + q * lanes * 4, &d, 4);
      }
      if (full < k4) {
        uint8_t tail[4] = {0, 0, 0, 0};
        for (size_t j = 0; 4 * full + j < size_t(K); ++j) tail[j] = src[4 * full + j] ^ v.flip;
        std::memcpy(o + full * lanes * 4, tail, 4);
      }
    }
    return;
  }
  PackIndexKMajor(v, r0, nr, K, lanes, scratch);
  for (size_t q = 0; q < k4; ++q) {
    int8_t* o = out + q * lanes * 4;
    for (size_t j = 0; j < 4; ++j) {
      const size_t k = 4 * q + j;
      if (k < size_t(K)) {
        const uint8_t* s = scratch + k * lanes;
        for (size_t l = 0; l < lanes; ++l) o[l * 4 + j] = static_cast<int8_t>(s[l] ^ 0x80);
      } else {
        for (size_t l = 0; l < lanes; ++l) o[l * 4 + j] = 0;
      }
    }
  }
}

}  // namespace axmoe
