"""Schedule for the PrimFuncs TVM legalizes itself (requantization chains, layout changes,
MoE dispatch, float routers): the default Relax CPU pipeline leaves their loops serial.

First every block TVM allows is inlined into its consumers (a requantization chain becomes
one loop nest, no intermediate tensors). Then, for every loop nest directly under the
function's root block:

    parallel   all loops but the innermost, fused   (when that is legal and the nest has at
                                                     least MIN_PARALLEL iterations at batch 1)
    vector     the innermost loop, split by 16      (when its extent is static and a multiple)

A primitive TVM refuses (a reduction inside, a data-dependent loop) leaves the nest serial.
"""

from __future__ import annotations

from tvm import s_tir, tirx

MIN_PARALLEL = 1 << 14
VECTOR = 16


def _extent(sch, loop) -> int | None:
    extent = sch.get(loop).extent
    return int(extent) if isinstance(extent, tirx.IntImm) else None


def _iterations(sch, loops) -> int:
    """Iterations of the nest, symbolic extents counted as 1 (batch 1)."""
    total = 1
    for loop in loops:
        total *= _extent(sch, loop) or 1
    return total



def _inline_elementwise(sch) -> None:
    """Inline every block TVM allows into its consumers (FuseTIR keeps each fused op's result
    in its own buffer: a whole intermediate tensor, allocated per call, for each stage of a
    requantization chain)."""
    root = sch.get_sblock("root")
    changed = True
    while changed:
        changed = False
        for block in sch.get_child_blocks(root):
            try:
                sch.compute_inline(block)
                changed = True
            except s_tir.ScheduleError:
                continue
            break


def schedule(func: tirx.PrimFunc) -> tirx.PrimFunc:
    try:
        sch = s_tir.Schedule(func)
        root = sch.get_sblock("root")
    except Exception:  # PrimFuncs without a root block (already lowered) stay as they are
        return func
    _inline_elementwise(sch)
    for block in sch.get_child_blocks(root):
        loops = sch.get_loops(block)
        if not loops:
            continue
        inner = _extent(sch, loops[-1])
        if inner and inner % VECTOR == 0 and inner >= VECTOR:
            attempt = sch.copy()
            try:
                _, lane = attempt.split(attempt.get_loops(block)[-1], [None, VECTOR])
                attempt.vectorize(lane)
                sch = attempt
            except s_tir.ScheduleError:
                pass
        loops = sch.get_loops(block)
        outer = loops[:-1] if len(loops) > 1 else loops
        if _iterations(sch, loops) >= MIN_PARALLEL:
            attempt = sch.copy()
            try:
                loops = attempt.get_loops(block)
                fused = attempt.fuse(*loops[:len(outer)]) if len(outer) > 1 else loops[0]
                attempt.parallel(fused)
                sch = attempt
            except s_tir.ScheduleError:
                pass
    return sch.mod["main"]
