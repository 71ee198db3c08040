"""CPU schedules: the axmoe kernels (`kernels.py`) and every other PrimFunc of a Relax module.

Kernels, loop nest (conv; matmul is the same with ROWS rows for OW_TILE pixels):

    parallel  n, g, mb, oh, ow_outer              (fused)
      stack     acc tile [OW_TILE, 16] = 0        (register tile)
      serial    t, cb, kh, kw                     (reduction)
        unroll    ow_inner                        (OW_TILE pixels share one weight vector)
          16 x CI micro-kernel: acc[ow, 0:16] += sum_ci x[ow, ci] * w[0:16, ci]
      vector    out[ow, 0:16] = acc[ow, 0:16] - comp[0:16]

On targets with AVX-512 VNNI the dot-product form does not come here: `vnni.py` writes that
nest in TIR with `vpdpbusd` (u8 x s8 -> s32, 64 MACs per instruction). Here the micro-kernel
is a 16-lane int32 vector loop that LLVM lowers for the target (NEON on aarch64). The LUT
product form gathers lut[x, w[0:16]] in the same nest (CI = 1). AVX-512 without VNNI would
need `vpmaddubsw`, which saturates in int16, so it is not used: the generic loop is exact everywhere.
"""

from __future__ import annotations

import tvm
from tvm import s_tir, tirx

KERNEL_ATTR = "axmoe.kernel"  # PrimFunc attribute naming the kernel kind: conv2d | matmul
OW_TILE = 8


def has_vnni(target: tvm.target.Target) -> bool:
    """Whether `target` can run `vpdpbusd` on 512-bit vectors."""
    if target.kind.name != "llvm":
        return False
    triple = str(target.attrs.get("mtriple", "")) or tvm.target.codegen.llvm_get_system_triple()
    if not triple.startswith(("x86_64", "i686")):
        return False
    features = tvm.target.codegen.llvm_get_cpu_features(target)
    return "avx512vnni" in features and "avx512bw" in features


def _largest_divisor(n: int, limit: int) -> int:
    return max(d for d in range(1, min(n, limit) + 1) if n % d == 0)


def _tile(sch: s_tir.Schedule, name: str, reductions: int, outer_loops: list, tile_loop, lane_loop) -> None:
    """Compute the reduction block `name` (`reductions` reduction axes, the last of depth CI)
    per output tile, under `tile_loop` of its consumer, in a local accumulator; its 16-lane
    micro-kernel vectorized. The consumer's `outer_loops` become one
    parallel loop and its `lane_loop` a vector loop."""
    block = sch.get_sblock(name)
    sch.compute_at(block, tile_loop, preserve_unit_loops=True)
    # "global", not "local": TVM 0.27 allocates "local" buffers from its workspace pool (a
    # call per tile); a global one this small (OW_TILE x 16 int32) is a stack slot
    sch.set_scope(block, 0, "global")
    loops = sch.get_loops(block)
    reduction = loops[-reductions:]
    spatial_tile, lane = loops[-reductions - 2], loops[-reductions - 1]
    depth = reduction[-1]
    sch.reorder(*reduction[:-1], spatial_tile, depth, lane)
    # loop annotations that check the dataflow come before decompose_reduction: the update
    # block it leaves has no init and counts as neither complete nor reduction
    sch.vectorize(lane)
    sch.vectorize(lane_loop)
    sch.parallel(sch.fuse(*outer_loops))
    init = sch.decompose_reduction(block, reduction[0])
    sch.vectorize(sch.get_loops(init)[-1])
    sch.unroll(depth)
    sch.unroll(spatial_tile)


def schedule_pack(func: tirx.PrimFunc, target: tvm.target.Target) -> tirx.PrimFunc:
    """A `kernels.pack_*_input` PrimFunc: its outer loops (all but the last three) parallel."""
    sch = s_tir.Schedule(func)
    loops = sch.get_loops(sch.get_sblock("pack_x"))
    sch.parallel(sch.fuse(*loops[:-3]) if len(loops) > 4 else loops[0])
    return sch.mod["main"]


def schedule_conv2d(func: tirx.PrimFunc, target: tvm.target.Target) -> tirx.PrimFunc:
    """A `kernels.conv2d` PrimFunc (blocks conv, conv_out)."""
    sch = s_tir.Schedule(func)
    out = sch.get_sblock("conv_out")
    n, g, mb, oh, ow, mi = sch.get_loops(out)
    ow_outer, _ = sch.split(ow, [None, _largest_divisor(int(sch.get(ow).extent), OW_TILE)])
    _tile(sch, "conv", 5, [n, g, mb, oh, ow_outer], ow_outer, mi)
    return sch.mod["main"]


def schedule_matmul(func: tirx.PrimFunc, target: tvm.target.Target) -> tirx.PrimFunc:
    """A `kernels.matmul` PrimFunc (blocks matmul, matmul_out)."""
    from runtime.tvm.kernels import ROWS

    sch = s_tir.Schedule(func)
    out = sch.get_sblock("matmul_out")
    r, bn, ni = sch.get_loops(out)
    r_outer, r_inner = sch.split(r, [None, ROWS])
    sch.reorder(r_outer, bn, r_inner, ni)
    _tile(sch, "matmul", 3, [r_outer, bn], bn, ni)
    return sch.mod["main"]


KERNEL_SCHEDULES = {"pack": schedule_pack, "conv2d": schedule_conv2d, "matmul": schedule_matmul}
