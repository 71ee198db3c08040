"""AVX-512 VNNI variants of the dot-product kernels (`kernels.conv2d` / `kernels.matmul` with
CI = 4), written in TIR directly: same buffers, same result, bit for bit.

    acc[0:16] = vpdpbusd(acc[0:16], broadcast(x[0:4] as int32), w[0:16, 0:4] as int32x16)
              = acc[i] + sum_{c < 4} zext(x[c]) * sext(w[i, c])      for each lane i

One instruction does 64 u8 x s8 multiply-accumulates into int32 lanes, without the int16
saturation of `vpmaddubsw`. TVM 0.27's `tensorize` crashes (segfault inside
`s_tir::Tensorize`, even for its own `dot_16x4_vnni` intrinsic on a plain 8x16x4 matmul), so
the micro-kernel is not a tensorized TE schedule but this hand-written loop nest (index
expressions are `T.meta_var`s and acc a default-scope buffer: TVM 0.27 would give a bound
scalar or a "local" buffer its own workspace-pool allocation on every parallel iteration,
about 15 % of a ResNet-20 run):

    conv    parallel (n, g, mb, oh, ow_outer):   acc[OW_TILE, 16] = 0
                serial (t, cb, kh, kw):          w = wp[g, mb, t, cb, kh, kw]   (64 bytes)
                    unroll ow_inner:             acc[ow_inner] = vpdpbusd(acc, x[.., 0:4], w)
                unroll ow_inner:                 out[.., 0:16] = acc[ow_inner] + side[g, mb]
    matmul  parallel (r_outer, nb):              acc[ROWS, 16], rows for pixels, (t, kb) serial
"""

from __future__ import annotations

from tvm import tirx
from tvm.script import tirx as T

VPDPBUSD = "llvm.x86.avx512.vpdpbusd.512"


def _dot(acc, x4, w64):
    """acc (int32x16) + 16 dot products of the 4 bytes x4 with the 16 x 4 bytes of w64.

    The operands are <64 x i8> vectors, the intrinsic's signature in the LLVM inside TVM 0.27
    (older LLVMs took <16 x i32>, as TVM's own `dot_16x4_vnni` still does)."""
    x64 = T.reinterpret(T.broadcast(T.reinterpret(x4, dtype="int32"), 16), dtype="int8x64")
    return T.call_llvm_pure_intrin("int32x16", T.llvm_lookup_intrinsic_id(VPDPBUSD), acc, x64, w64)


def conv2d(wp_shape, packed_shape, out_size, strides, dilations, ow_tile: int) -> tirx.PrimFunc:
    """PrimFunc(xp [n, G, T, CB, Hp, Wp, 4] u8, wp [G, MB, T, CB, KH, KW, 16, 4] i8,
    side [G, MB, 16] i32) -> acc [n, G, MB, OH, OW, 16] i32 (n symbolic)."""
    groups, mb, planes, cb, kh, kw, _, _ = (int(v) for v in wp_shape)
    _, _, _, _, hp, wpad, _ = packed_shape
    hp, wpad = int(hp), int(wpad)
    oh, ow = out_size
    (sh, sw), (dh, dw) = strides, dilations
    tiles = ow // ow_tile
    per_image = groups * mb * oh * tiles

    @T.prim_func(private=True)
    def kernel(xp_handle: T.handle, wp: T.Buffer((groups, mb, planes, cb, kh, kw, 16, 4), "int8"),
               side: T.Buffer((groups, mb, 16), "int32"), out_handle: T.handle):
        T.func_attr({"tirx.noalias": True})
        n = T.int64()
        xp = T.match_buffer(xp_handle, (n, groups, planes, cb, hp, wpad, 4), "uint8")
        out = T.match_buffer(out_handle, (n, groups, mb, oh, ow, 16), "int32")
        for fused in T.parallel(n * T.int64(per_image)):
            image = T.meta_var(fused // T.int64(per_image))
            rest = T.meta_var(T.Cast("int32", fused % T.int64(per_image)))
            g = T.meta_var(rest // (mb * oh * tiles))
            bm = T.meta_var(rest // (oh * tiles) % mb)
            r = T.meta_var(rest // tiles % oh)
            s0 = T.meta_var(rest % tiles * ow_tile)
            acc = T.alloc_buffer((ow_tile, 16), "int32")
            for i in T.unroll(ow_tile):
                acc[i, 0:16] = T.broadcast(T.int32(0), 16)
            for t, bc, rh, rw in T.grid(planes, cb, kh, kw):
                w64 = T.meta_var(wp.vload([g, bm, t, bc, rh, rw, 0, 0], "int8x64"))
                for i in T.unroll(ow_tile):
                    acc[i, 0:16] = _dot(acc.vload([i, 0], "int32x16"),
                                        xp.vload([image, g, t, bc, r * sh + rh * dh, (s0 + i) * sw + rw * dw, 0],
                                                 "uint8x4"),
                                        w64)
            for i in T.unroll(ow_tile):
                out[image, g, bm, r, s0 + i, 0:16] = acc.vload([i, 0], "int32x16") + side.vload([g, bm, 0], "int32x16")

    return kernel


def matmul(wp_shape, rows_per_tile: int) -> tirx.PrimFunc:
    """PrimFunc(xa [Rp, T, KB, 4] u8, wp [NB, T, KB, 16, 4] i8, side [NB, 16] i32)
    -> acc [Rp, NB, 16] i32 (Rp symbolic, a multiple of `rows_per_tile`)."""
    nb, planes, kb, _, _ = (int(v) for v in wp_shape)

    @T.prim_func(private=True)
    def kernel(xa_handle: T.handle, wp: T.Buffer((nb, planes, kb, 16, 4), "int8"),
               side: T.Buffer((nb, 16), "int32"), out_handle: T.handle):
        T.func_attr({"tirx.noalias": True})
        rows = T.int64()
        xa = T.match_buffer(xa_handle, (rows, planes, kb, 4), "uint8")
        out = T.match_buffer(out_handle, (rows, nb, 16), "int32")
        for fused in T.parallel(rows // T.int64(rows_per_tile) * T.int64(nb)):
            r0 = T.meta_var(fused // T.int64(nb) * T.int64(rows_per_tile))
            bn = T.meta_var(T.Cast("int32", fused % T.int64(nb)))
            acc = T.alloc_buffer((rows_per_tile, 16), "int32")
            for i in T.unroll(rows_per_tile):
                acc[i, 0:16] = T.broadcast(T.int32(0), 16)
            for t, bk in T.grid(planes, kb):
                w64 = T.meta_var(wp.vload([bn, t, bk, 0, 0], "int8x64"))
                for i in T.unroll(rows_per_tile):
                    acc[i, 0:16] = _dot(acc.vload([i, 0], "int32x16"),
                                        xa.vload([r0 + i, t, bk, 0], "uint8x4"), w64)
            for i in T.unroll(rows_per_tile):
                out[r0 + i, bn, 0:16] = acc.vload([i, 0], "int32x16") + side.vload([bn, 0], "int32x16")

    return kernel
