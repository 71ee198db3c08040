// Microkernels of the two GEMM paths behind axmoe.ApproxConvInteger / ApproxMatMulInteger.
//
// General LUT path (any table):
//     out[t][l] (+)= sum_{k < K} T(sel[t][k], idx[k][l])          t < nt, l < lanes
// idx holds one operand as table indices (value + 128), K-major, lanes a multiple of 64;
// sel holds the other operand (value + 128) and picks the 256-entry table T(s, .) that idx
// indexes: for lanes over activations T(s, i) = lut[i][s], for lanes over weights lut[s][i].
//
// Decomposed path (the LUT is an exact sum of products of masked operands, see
// core/bit_decomposition.h):
//     out[t][l] = sum_{term} sum_{k < 4*K4} alpha_term(act[k/4][l][k%4]) * wts[term][t][k]
// with alpha_term(a) = int8(a & mask[term]) (bit 7 weighs -128) and wts the term's
// coefficient times the masked weight, already int8. act holds raw signed activations,
// [K4][lanes][4] (4 consecutive k per lane: the VNNI layout), lanes a multiple of 16.
// (The driver may hand the kernel the weights as act and the activations as wts, with the
// decomposition's operands swapped: the sum is the same.)
// wsum[term][t] = sum_k wts[term][t][k] lets u8 x s8 dot products undo the +128 offset.
//
// Every kernel wraps int32 sums modulo 2^32, exactly as int32 accumulators do.
#pragma once

#include <cstddef>
#include <cstdint>

namespace axmoe::kernels {

struct LutGemmArgs {
  const int32_t* tables;  // [256][256]: T(s, i) = tables[s * 256 + i]
  const uint8_t* planes;  // [256][2][256]: low / high byte of each T(s, i); null if some T does not fit int16
  const uint8_t* idx;     // [K][ldidx]
  size_t ldidx;
  size_t lanes;           // multiple of 64
  size_t k;
  const uint8_t* sel;     // [nt][ldsel]
  size_t ldsel;
  size_t nt;
  int32_t* out;           // [nt][lanes]
};
using LutGemmFn = void (*)(const LutGemmArgs&);

struct DotGemmArgs {
  const uint8_t* masks;   // [nterms] activation masks
  size_t nterms;
  const int8_t* act;      // [k4][ldact][4]: row k4 at act + k4 * ldact * 4
  size_t ldact;           // >= lanes
  size_t lanes;           // multiple of 16
  size_t k4;
  const int8_t* wts;      // [nterms][ld_term / ld_t][ld_t], row t of term at wts + term*ld_term + t*ld_t
  size_t ld_term;
  size_t ld_t;            // >= 4 * k4
  const int32_t* wsum;    // [nterms][ld_wsum]
  size_t ld_wsum;
  size_t nt;
  int32_t* out;           // [nt][lanes]
  // Correction table, only for variants that take one (ct != null):
  //   out[t][l] += sum_k ct[t * ct_ld_t + 64 * (k / 4) + ct_idx[k/4][l][k%4]]
  // ct_idx ([k4][ldact][4], like act) holds 16 * (k % 4) + the activation's table nibble, so
  // one vpermb looks up 16 lanes x 4 k in the 64-byte table of 4 consecutive k. Up to
  // ct_group consecutive k4 steps may be summed in int8 first (the driver bounds the table
  // so that cannot overflow).
  const int8_t* ct = nullptr;
  size_t ct_ld_t = 0;
  const uint8_t* ct_idx = nullptr;
  size_t ct_group = 1;
};
using DotGemmFn = void (*)(const DotGemmArgs&);

// Declarations of every variant compiled into this build (variants.inc is the one list).
#define AXMOE_VARIANT(isa, lut_fn, dot_fn, lut_needs_planes, dot_takes_ct) \
  void lut_fn(const LutGemmArgs&);                                         \
  void dot_fn(const DotGemmArgs&);
#include "kernels/variants.inc"
#undef AXMOE_VARIANT

}  // namespace axmoe::kernels
