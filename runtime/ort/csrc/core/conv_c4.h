// Conv input in the layout the decomposed (dot) path wants: channels interleaved by 4 and the
// padding made explicit, so an activation panel is a run of 4-byte copies.
//
//   image[c4][y][x][ci] = a[4*c4 + ci][y - ph][x - pw]     (0 outside the input or for
//                                                          channels >= C: a = 0 is the
//                                                          zero point)
//   size C4 x Hp x Wp x 4, C4 = ceil(C / 4), Hp / Wp covering every tap of every output.
//
// The reduction index is reordered to k' = ((ky * KW + kx) * C4 + c4) * 4 + ci, so the 4
// bytes of one VNNI dword are 4 channels of one tap: a panel column k4' = (tap, c4) of
// output positions p = oy * OW + ox reads image[c4][oy*sh + ky*dh][ox*sw + kx*dw][0..3].
#pragma once

#include <cstddef>
#include <cstdint>

#include "core/operand_pack.h"

namespace axmoe {

struct C4Layout {
  int64_t c4, hp, wp;  // channel groups of 4, padded height and width
  int64_t kh_kw;       // taps per channel
  size_t bytes() const { return size_t(c4 * hp * wp * 4); }
  int64_t k4() const { return kh_kw * c4; }  // reduction length in dwords
};

C4Layout MakeC4Layout(const ConvGeometry& g);

// Writes the image of one (image, group) im2col view.
void BuildC4Image(const OperandView& a, const C4Layout& layout, int8_t* image);

// out[(k4 * lanes + l) * 4 + ci] for positions r0 .. r0 + nr (zero beyond nr).
void PackC4Panel(const ConvGeometry& g, const C4Layout& layout, const int8_t* image, int64_t r0, int64_t nr,
                 size_t lanes, int8_t* out);

// Original reduction index (c * KH + ky) * KW + kx of k', or -1 for a padding channel.
int64_t C4OriginalK(const ConvGeometry& g, const C4Layout& layout, int64_t k);

}  // namespace axmoe
