"""TE computes of the axmoe integer ops: direct 2-D convolution and 2-D matmul, int32
accumulation, in a blocked layout made for a 16-lane x CI-deep dot-product micro-kernel.

An activation enters as its stored byte x (uint8) with zero point z, a = x - z. Two product
forms share one loop nest (`Product`):

``lut``  every product is a table lookup (any 256 x 256 table); z must be 128 so x = a + 128
         is the table row:

             acc[m, p] = sum_k lut[x[k, p], b[m, k] + 128]

``dot``  the multiplier as a sum of T integer products of masked operands
         (`multipliers.decompose`), mul(a, b) = sum_t c_t (a & ma_t) (b & mb_t), computed as
         ONE u8 x s8 dot product over an augmented reduction axis (t, k):

             u_t = x & ma_t   (uint8)       W_t = c_t (b & mb_t)   (int8)
             acc[m, p] = sum_t sum_k u_t[k, p] W_t[m, k]  -  comp[m]
             comp[m]   = sum_t z_t sum_k W_t[m, k],    z_t = z if ma_t keeps bit 7 else 0

         With z = 128, a and x differ only in bit 7, so a & ma = (x & ma) - 128 when ma keeps
         bit 7 and a & ma = x & ma when it does not. The exact product is the single term
         (c, ma, mb) = (1, 0xFF, 0xFF), valid for any z in [0, 255].

Accumulation wraps around in int32 (two's complement), as the numpy oracle's does, so the
compensation may be subtracted after the sum. Padded taps are a = 0 (x = z): they still go
through the multiplier, as ONNX ConvInteger pads with the zero point.

Layouts (G groups of Cg input / Mg output channels; MB = ceil(Mg / 16) blocks of 16 outputs;
CB = ceil(Cg / CI) blocks of CI reduction channels, CI = 4 for dot, 1 for lut):

    conv  xp  [N, G, T, CB, Hp, Wp, CI]       uint8   x padded with z, masked per term,
                                                      0 beyond Cg (its weights are 0)
          wp  [G, MB, T, CB, KH, KW, 16, CI]  int8 W_t (dot) | uint8 b + 128 (lut)
          acc [N, G, MB, OH, OW, 16]          int32   then + (-comp) (dot)
    matmul xa [Rp, T, KB, CI]   rows padded to a multiple of ROWS
          wp  [NB, T, KB, 16, CI]
          acc [Rp, NB, 16]

The kernels return acc in its blocked layout; the converters unblock it with Relax layout
ops, which fuse into the requantization that follows.

1-D convolutions are 2-D ones with H = KH = 1 (the converter reshapes). Weight packing and
the compensation are separate computes on the weights alone, so Relax folds them into
constants at compile time.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from tvm import te, tirx

from multipliers.decompose import Term

LANES = 16  # outputs per block: one 512-bit int32 vector
ROWS = 8  # matmul rows per register tile (the row axis is padded to a multiple of it)
EXACT = (Term(1, 0xFF, 0xFF),)


@dataclass(frozen=True)
class Product:
    """How one product is formed: `lut` (table lookup) or `dot` (masked integer terms)."""

    kind: str  # "lut" | "dot"
    terms: tuple[Term, ...] = EXACT  # dot only

    def __post_init__(self):
        if self.kind not in ("lut", "dot"):
            raise ValueError(f"product kind must be 'lut' or 'dot', got {self.kind!r}")
        if self.kind == "dot" and not self.terms:
            raise ValueError("a dot product needs at least one term")

    @property
    def planes(self) -> int:
        """T: activation planes (terms) in the reduction."""
        return len(self.terms) if self.kind == "dot" else 1

    @property
    def depth(self) -> int:
        """CI: reduction channels per innermost block (4 bytes feed one dot-product lane)."""
        return 4 if self.kind == "dot" else 1

    def plane_zero_points(self, zero_point: int) -> list[int]:
        """z_t: the zero point of each masked activation plane u_t."""
        if self.kind == "lut":
            return [zero_point]
        return [zero_point if t.mask_a & 0x80 else 0 for t in self.terms]


def _ceil_div(a, b):
    return (a + b - 1) // b


def _select(index, values: Sequence[int], dtype: str):
    """values[index] for a loop variable `index` over len(values) constants."""
    out = tirx.const(values[-1], dtype)
    for i in range(len(values) - 2, -1, -1):
        out = tirx.Select(index == i, tirx.const(values[i], dtype), out)
    return out


def _masked(value, t, product: Product):
    """u_t = value & ma_t (uint8)."""
    if product.kind == "lut" or all(term.mask_a == 0xFF for term in product.terms):
        return value
    return value & _select(t, [term.mask_a for term in product.terms], "uint8")


def _weight_entry(w, index, t, product: Product):
    """Packed weight: c_t (b & mb_t) as int8 (dot), or b + 128 as uint8 (lut)."""
    b = w[index].astype("int32")
    if product.kind == "lut":
        return (b + 128).astype("uint8")
    terms = product.terms
    if len(terms) == 1 and terms[0] == EXACT[0]:
        return b.astype("int8")
    masks = [term.mask_b - 256 if term.mask_b & 0x80 else term.mask_b for term in terms]
    coefs = [term.coef for term in terms]
    return (_select(t, coefs, "int32") * (b & _select(t, masks, "int32"))).astype("int8")


def _product(x, w, product: Product, lut):
    if product.kind == "lut":
        return lut[x.astype("int32"), w.astype("int32")]
    return x.astype("int32") * w.astype("int32")


# ------------------------------------------------------------------------------ conv
@dataclass(frozen=True)
class ConvGeometry:
    """Static conv parameters (2-D; a 1-D conv has kernel/stride/... 1 on the first axis)."""

    strides: tuple[int, int] = (1, 1)
    pads: tuple[int, int, int, int] = (0, 0, 0, 0)  # top, left, bottom, right
    dilations: tuple[int, int] = (1, 1)
    groups: int = 1

    def out_size(self, size: int, kernel: int, axis: int) -> int:
        extent = size + self.pads[axis] + self.pads[axis + 2]
        return (extent - self.dilations[axis] * (kernel - 1) - 1) // self.strides[axis] + 1


def pack_conv_weight(w: te.Tensor, product: Product, groups: int) -> te.Tensor:
    """w [M, Cg, KH, KW] int8 -> wp [G, MB, T, CB, KH, KW, 16, CI] (see module docstring)."""
    m, cg, kh, kw = (int(v) for v in w.shape)
    mg = m // groups
    t_count, ci = product.planes, product.depth
    mb, cb = _ceil_div(mg, LANES), _ceil_div(cg, ci)
    dtype = "uint8" if product.kind == "lut" else "int8"

    def entry(g, bm, t, bc, r, s, mi, c):
        out_ch, in_ch = bm * LANES + mi, bc * ci + c
        inside = tirx.all(out_ch < mg, in_ch < cg)
        value = _weight_entry(w, (g * mg + out_ch, in_ch, r, s), t, product)
        return tirx.if_then_else(inside, value, tirx.const(0, dtype))

    return te.compute((groups, mb, t_count, cb, kh, kw, LANES, ci), entry, name="pack_weight")


def conv_compensation(wp: te.Tensor, product: Product, zero_point: int) -> te.Tensor:
    """-comp [G, MB, 16] int32 = -sum_t z_t sum_k W_t, added to the accumulator (zeros for lut)."""
    g, mb, t_count, cb, kh, kw, lanes, ci = (int(v) for v in wp.shape)
    zps = product.plane_zero_points(zero_point)
    if product.kind == "lut" or not any(zps):
        return te.compute((g, mb, lanes), lambda *i: tirx.const(0, "int32"), name="compensation")
    rt, rc, rh, rw, rci = (te.reduce_axis((0, n), name=v) for n, v in
                           ((t_count, "t"), (cb, "cb"), (kh, "kh"), (kw, "kw"), (ci, "ci")))
    return te.compute(
        (g, mb, lanes),
        lambda gg, bm, mi: te.sum(_select(rt, [-z for z in zps], "int32")
                                  * wp[gg, bm, rt, rc, rh, rw, mi, rci].astype("int32"),
                                  axis=[rt, rc, rh, rw, rci]),
        name="compensation")


def pack_conv_input(x: te.Tensor, product: Product, geometry: ConvGeometry, zero_point: int) -> te.Tensor:
    """x [N, C, H, W] uint8 (zero point `zero_point`) -> xp [N, G, T, CB, Hp, Wp, CI]."""
    n, c, h, w = x.shape
    c, h, w = int(c), int(h), int(w)
    groups, t_count, ci = geometry.groups, product.planes, product.depth
    cg = c // groups
    cb = _ceil_div(cg, ci)
    top, left = geometry.pads[0], geometry.pads[1]
    hp, wpad = h + top + geometry.pads[2], w + left + geometry.pads[3]
    zp = tirx.const(zero_point, "uint8")

    def padded(nn, g, t, bc, r, s, cc):
        ch = bc * ci + cc
        inside = tirx.all(r >= top, r < top + h, s >= left, s < left + w)
        # indices clamped into x: a select discards the value, and a vectorised one reads
        # both of its sides
        value = x[nn, tirx.min(g * cg + ch, c - 1), tirx.max(tirx.min(r - top, h - 1), 0),
                  tirx.max(tirx.min(s - left, w - 1), 0)]
        value = tirx.if_then_else(inside, value, zp)
        if ci * cb != cg:
            value = tirx.if_then_else(ch < cg, value, tirx.const(0, "uint8"))
        return _masked(value, t, product)

    return te.compute((n, groups, t_count, cb, hp, wpad, ci), padded, name="pack_x")


def conv2d(xp: te.Tensor, wp: te.Tensor, side: te.Tensor, geometry: ConvGeometry, product: Product,
           out_size: tuple[int, int]) -> te.Tensor:
    """acc [N, G, MB, OH, OW, 16] int32 from the packed input and weights.

    `side` is the LUT (int32 [256, 256]) for lut, -comp [G, MB, 16] (`conv_compensation`) for
    dot, added to the sum in a second stage (`conv_out`). Output channel g * Mg + 16 * mb + i
    is acc[:, g, mb, :, :, i].
    """
    n = xp.shape[0]
    groups, mb, t_count, cb, kh, kw, lanes, ci = (int(v) for v in wp.shape)
    (sh, sw), (dh, dw) = geometry.strides, geometry.dilations
    oh, ow = out_size
    rt, rc, rh, rw, rci = (te.reduce_axis((0, v), name=name) for v, name in
                           ((t_count, "t"), (cb, "cb"), (kh, "kh"), (kw, "kw"), (ci, "ci")))
    acc = te.compute(
        (n, groups, mb, oh, ow, lanes),
        lambda nn, g, bm, r, s, mi: te.sum(
            _product(xp[nn, g, rt, rc, r * sh + rh * dh, s * sw + rw * dw, rci],
                     wp[g, bm, rt, rc, rh, rw, mi, rci], product, side),
            axis=[rt, rc, rh, rw, rci]),
        name="conv")
    if product.kind == "lut":
        return te.compute(acc.shape, lambda *i: acc[i], name="conv_out")
    return te.compute(acc.shape, lambda nn, g, bm, r, s, mi: acc[nn, g, bm, r, s, mi] + side[g, bm, mi],
                      name="conv_out")


# ---------------------------------------------------------------------------- matmul
def pack_matmul_weight(w: te.Tensor, product: Product) -> te.Tensor:
    """w [K, N] int8 -> wp [NB, T, KB, 16, CI]."""
    k, n = (int(v) for v in w.shape)
    t_count, ci = product.planes, product.depth
    nb, kb = _ceil_div(n, LANES), _ceil_div(k, ci)
    dtype = "uint8" if product.kind == "lut" else "int8"

    def entry(bn, t, bk, ni, c):
        col, row = bn * LANES + ni, bk * ci + c
        value = _weight_entry(w, (row, col), t, product)
        return tirx.if_then_else(tirx.all(col < n, row < k), value, tirx.const(0, dtype))

    return te.compute((nb, t_count, kb, LANES, ci), entry, name="pack_weight")


def matmul_compensation(wp: te.Tensor, product: Product, zero_point: int) -> te.Tensor:
    """-comp [NB, 16] int32 = -sum_t z_t sum_k W_t, added to the accumulator (zeros for lut)."""
    nb, t_count, kb, lanes, ci = (int(v) for v in wp.shape)
    zps = product.plane_zero_points(zero_point)
    if product.kind == "lut" or not any(zps):
        return te.compute((nb, lanes), lambda *i: tirx.const(0, "int32"), name="compensation")
    rt, rk, rci = (te.reduce_axis((0, v), name=name) for v, name in ((t_count, "t"), (kb, "kb"), (ci, "ci")))
    return te.compute(
        (nb, lanes),
        lambda bn, ni: te.sum(_select(rt, [-z for z in zps], "int32") * wp[bn, rt, rk, ni, rci].astype("int32"),
                              axis=[rt, rk, rci]),
        name="compensation")


def pack_matmul_input(x: te.Tensor, product: Product) -> te.Tensor:
    """x [R, K] uint8 -> xa [Rp, T, KB, CI], Rp = R rounded up to a multiple of ROWS."""
    rows, k = x.shape
    k = int(k)
    t_count, ci = product.planes, product.depth
    kb = _ceil_div(k, ci)
    padded_rows = _ceil_div(rows, ROWS) * ROWS

    def packed(r, t, bk, c):
        col = bk * ci + c
        inside = r < rows if ci * kb == k else tirx.all(r < rows, col < k)
        value = x[tirx.min(r, rows - 1), tirx.min(col, k - 1)]  # clamped: see pack_conv_input
        value = tirx.if_then_else(inside, value, tirx.const(0, "uint8"))
        return _masked(value, t, product)

    return te.compute((padded_rows, t_count, kb, ci), packed, name="pack_x")


def matmul(xa: te.Tensor, wp: te.Tensor, side: te.Tensor, product: Product) -> te.Tensor:
    """acc [Rp, NB, 16] int32 from the packed input and weights; column 16 * nb + i of row r
    is acc[r, nb, i]. `side` as in `conv2d`."""
    padded_rows = xa.shape[0]
    nb, t_count, kb, lanes, ci = (int(v) for v in wp.shape)
    rt, rk, rci = (te.reduce_axis((0, v), name=name) for v, name in ((t_count, "t"), (kb, "kb"), (ci, "ci")))
    acc = te.compute(
        (padded_rows, nb, lanes),
        lambda r, bn, ni: te.sum(_product(xa[r, rt, rk, rci], wp[bn, rt, rk, ni, rci], product, side),
                                 axis=[rt, rk, rci]),
        name="matmul")
    if product.kind == "lut":
        return te.compute(acc.shape, lambda *i: acc[i], name="matmul_out")
    return te.compute(acc.shape, lambda r, bn, ni: acc[r, bn, ni] + side[bn, ni], name="matmul_out")
