// Views of the two GEMM operands and the packers that lay them out for the kernels.
//
// A view is a logical [R][K] matrix of signed 8-bit operands read from stored bytes:
//     value(r, k) = int8(byte ^ flip)
// (flip = 0x80 reads uint8 with zero point 128 as a = q - 128; flip = 0 reads int8).
// Dense views cover MatMul operands and conv weights; im2col views read a conv input
// (one image, one group: C channels of H x W) as rows r = oy * OW + ox, columns
// k = (c * KH + ky) * KW + kx, with out-of-image taps (padding) reading a = 0, the zero point.
#pragma once

#include <cstddef>
#include <cstdint>

namespace axmoe {

struct ConvGeometry {
  int64_t C, H, W;      // input channels (of one group) and size
  int64_t KH, KW;       // kernel
  int64_t OH, OW;       // output
  int64_t sh, sw, dh, dw, ph, pw;  // strides, dilations, leading pads
};

struct OperandView {
  const uint8_t* data = nullptr;
  uint8_t flip = 0;
  bool im2col = false;
  int64_t stride_r = 0, stride_k = 0;  // dense
  const ConvGeometry* geo = nullptr;   // im2col

  int8_t At(int64_t r, int64_t k) const;  // value(r, k)
};

// out[k * lanes + l] = value(r0 + l, k) + 128 for l < nr, 128 for nr <= l < lanes.
void PackIndexKMajor(const OperandView& v, int64_t r0, int64_t nr, int64_t K, size_t lanes, uint8_t* out);

// out[t * ld + k] = value(r0 + t, k) + 128, t < nr, k < K.
void PackIndexRows(const OperandView& v, int64_t r0, int64_t nr, int64_t K, size_t ld, uint8_t* out);

// out[((k / 4) * lanes + l) * 4 + k % 4] = value(r0 + l, k), zero for k >= K or l >= nr;
// k4 = ceil(K / 4). scratch holds K * lanes bytes.
void PackActK4(const OperandView& v, int64_t r0, int64_t nr, int64_t K, size_t lanes, int8_t* out,
               uint8_t* scratch);

}  // namespace axmoe
