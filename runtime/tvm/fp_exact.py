"""Float arithmetic rounded as onnxruntime's unfused kernels round it.

TVM's LLVM backend creates every target machine with `AllowFPOpFusion = Fast`, so LLVM
contracts any float multiply feeding an add into one fused multiply-add, rounded once:

    DequantizeLinear(q1) + DequantizeLinear(q2)    onnxruntime: round(round(a * s1) + round(b * s2))
                                                   TVM:         round(a * s1 + round(b * s2))  (FMA)

onnxruntime runs the two ops as separate kernels, so each product is rounded to float32 before
the add. The results differ in the last bit now and then, and a later QuantizeLinear that
lands on a rounding boundary turns that into a different int8 value. Here every float
product of the elementwise ops (Mul, DequantizeLinear) goes through `llvm.arithmetic.fence`,
which LLVM may not fuse across (x86 and aarch64 alike; it costs no instruction):

    dequantize(q, s, z) = fence(float32(q - z) * s)       multiply(a, b) = fence(a * b)

QuantizeLinear needs nothing: TVM computes clip(round_half_even(x / s) + z), as onnxruntime
does (x / s, round half to even, saturate), and the add follows the rounding. Reductions
(matmul, mean) keep TVM's own legalization.

`LEGALIZE_MAP` overrides TVM's legalization of those two Relax ops (`relax.transform.LegalizeOps`).
"""

from __future__ import annotations

from tvm import relax, te, tirx
from tvm.relax.transform.legalize_ops.common import _try_convert_to_scalar_const

FENCE = "llvm.arithmetic.fence"


def fence(value):
    """`value` (a float expression) rounded here: no contraction with what consumes it."""
    return tirx.call_llvm_pure_intrin(str(value.ty), FENCE, value)


def _is_float(dtype) -> bool:
    return str(dtype).startswith(("float", "bfloat"))


def _broadcast_index(shape, out_ndim: int, index):
    """Index of a numpy-broadcast operand of `shape` at output position `index`."""
    offset = out_ndim - len(shape)
    return tuple(0 if isinstance(d, tirx.IntImm) and d.value == 1 else index[offset + i]
                 for i, d in enumerate(shape))


def _value(x, out_ndim: int, index):
    if isinstance(x, te.Tensor):
        return x[_broadcast_index(x.shape, out_ndim, index)] if x.shape else x()
    return x


def _multiply(bb: relax.BlockBuilder, call: relax.Call) -> relax.Expr:
    """relax.multiply: fenced product for float tensors; TVM's lowering otherwise."""
    out = call.ty
    if not _is_float(out.dtype) or out.shape is None or not isinstance(out.shape, relax.ShapeExpr):
        return _default("relax.multiply")(bb, call)
    shape = list(out.shape.values)

    def compute(a, b):
        return te.compute(shape, lambda *i: fence(_value(a, len(shape), i) * _value(b, len(shape), i)),
                          name="multiply")

    return bb.call_te(compute, _try_convert_to_scalar_const(call.args[0]),
                      _try_convert_to_scalar_const(call.args[1]), primfunc_name_hint="multiply")


def _dequantize(bb: relax.BlockBuilder, call: relax.Call) -> relax.Expr:
    """relax.dequantize to float32: fence(float32(q - z) * s), scale/zero point per tensor or per
    channel along `axis` (TVM's formula, rounded on its own)."""
    if str(call.attrs.out_dtype) != "float32":
        return _default("relax.dequantize")(bb, call)
    axis = int(call.attrs.axis)

    def param(p, index):
        if not isinstance(p, te.Tensor):
            return p
        if not p.shape or all(isinstance(d, tirx.IntImm) and d.value == 1 for d in p.shape):
            return p[(0,) * len(p.shape)]
        return p[index[axis]]

    def compute(data, scale, zp):
        signed = "float32" if _is_float(data.dtype) else "int32"

        def element(*index):
            value = data[index].astype(signed) - param(zp, index).astype(signed)
            return fence(value.astype("float32") * param(scale, index).astype("float32"))

        return te.compute(data.shape, element, name="dequantized")

    return bb.call_te(compute, call.args[0], _try_convert_to_scalar_const(call.args[1]),
                      _try_convert_to_scalar_const(call.args[2]), primfunc_name_hint="dequantize")


def _default(op_name: str):
    from tvm.ir import Op

    return Op.get(op_name).get_attr("FLegalize")


LEGALIZE_MAP = {"relax.multiply": _multiply, "relax.dequantize": _dequantize}
