#include "core/conv_c4.h"

#include <algorithm>
#include <cstring>

namespace axmoe {
namespace {

// Rows here are short (an output row of 4-byte pixels): inline copies beat memcpy calls.
inline void CopyDwords(int8_t* dst, const int8_t* src, int64_t n) {
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) std::memcpy(dst + i * 4, src + i * 4, 64);
  for (; i < n; ++i) std::memcpy(dst + i * 4, src + i * 4, 4);
}

}  // namespace

C4Layout MakeC4Layout(const ConvGeometry& g) {
  C4Layout l;
  l.c4 = (g.C + 3) / 4;
  l.hp = std::max(g.H + g.ph, (g.OH - 1) * g.sh + (g.KH - 1) * g.dh + 1);
  l.wp = std::max(g.W + g.pw, (g.OW - 1) * g.sw + (g.KW - 1) * g.dw + 1);
  l.kh_kw = g.KH * g.KW;
  return l;
}

void BuildC4Image(const OperandView& a, const C4Layout& layout, int8_t* image) {
  const ConvGeometry& g = *a.geo;
  std::memset(image, 0, layout.bytes());
  for (int64_t c = 0; c < g.C; ++c) {
    int8_t* dst = image + (c / 4) * layout.hp * layout.wp * 4 + c % 4;
    for (int64_t y = 0; y < g.H; ++y) {
      const uint8_t* src = a.data + (c * g.H + y) * g.W;
      int8_t* row = dst + ((y + g.ph) * layout.wp + g.pw) * 4;
      for (int64_t x = 0; x < g.W; ++x) row[x * 4] = static_cast<int8_t>(src[x] ^ a.flip);
    }
  }
}

void PackC4Panel(const ConvGeometry& g, const C4Layout& layout, const int8_t* image, int64_t r0, int64_t nr,
                 size_t lanes, int8_t* out) {
  const int64_t plane = layout.hp * layout.wp;
  for (int64_t tap = 0; tap < layout.kh_kw; ++tap) {
    const int64_t ky = tap / g.KW, kx = tap % g.KW;
    for (int64_t c4 = 0; c4 < layout.c4; ++c4) {
      int8_t* o = out + size_t(tap * layout.c4 + c4) * lanes * 4;
      const int8_t* img = image + c4 * plane * 4;
      int64_t r = r0;
      while (r < r0 + nr) {
        const int64_t oy = r / g.OW, ox0 = r % g.OW;
        const int64_t ox1 = std::min<int64_t>(g.OW, ox0 + (r0 + nr - r));
        const int8_t* src = img + ((oy * g.sh + ky * g.dh) * layout.wp + ox0 * g.sw + kx * g.dw) * 4;
        int8_t* dst = o + (r - r0) * 4;
        if (g.sw == 1) {
          CopyDwords(dst, src, ox1 - ox0);
        } else {
          for (int64_t i = 0; i < ox1 - ox0; ++i) std::memcpy(dst + i * 4, src + i * g.sw * 4, 4);
        }
        r += ox1 - ox0;
      }
      std::memset(o + nr * 4, 0, (lanes - size_t(nr)) * 4);
    }
  }
}

int64_t C4OriginalK(const ConvGeometry& g, const C4Layout& layout, int64_t k) {
  const int64_t ci = k % 4, c4 = (k / 4) % layout.c4, tap = k / 4 / layout.c4;
  const int64_t c = c4 * 4 + ci;
  if (c >= g.C) return -1;
  return c * layout.kh_kw + tap;
}

}  // namespace axmoe
