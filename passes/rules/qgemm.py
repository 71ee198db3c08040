"""com.microsoft.QGemm: onnxruntime's QOperator Gemm (what `quantize_static` in QOperator format
makes of a Gemm, e.g. a classifier's Linear layers), requantization included.

    y = QGemm(A, sa, za, B, sb, zb[, C_int32][, sy, zy])    attributes alpha, transA, transB

    acc[m, n] = sum_k (A - za)[m, k] * W[k, n] + C[n],   W = B, or B^T under transB
    y_q = saturate(round(float32(acc) * (alpha sa) sb / sy) + zy)       with sy and zy
    y   = float32(acc) * (alpha sa) sb                                  without both: float output

as onnxruntime's kernel computes it (contrib_ops/cpu/quantization/qgemm.cc: one float32 scale
per column, `alpha * sa * sb[n]` in that order, divided by `sy`; the int32 C joins the
accumulator unscaled). The IntegerOp therefore carries `x_scale = float32(alpha * sa)`: the
lowerings' `(x_scale * w_scale) / y_scale` is then the kernel's scale bit for bit, alpha
included. A zero point without a scale requantizes with the scale alone (sy = 1); a scale
without a zero point (a float output divided by sy) is refused, as is transA and a C that is
not one value per output column (C broadcast over rows only).

Under an operand-mask multiplier the `decomposed` lowering keeps the QGemm and masks B where it
is stored, in its stored layout (N, K under transB); `rewrite` first makes a B that a Constant
node (or an Identity) provides an initializer of that layout, which the masks then replace.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from modelfile import naming
from multipliers import Multiplier
from passes.candidates import IntegerOp
from passes.lowering import Builder
from passes.reasons import Reason, Rejection, reject
from passes.rules._operands import OPERAND_REASONS, const, input_at, signed_operands, zero_point
from passes.rules._rule import Pattern, Rule, mask_term

MS_DOMAIN = "com.microsoft"


class QGemmRule(Rule):
    name = "qgemm"
    pattern = Pattern(("QGemm",), domain=MS_DOMAIN)
    reasons = (*OPERAND_REASONS, Reason.SCALES_NOT_CONSTANT, Reason.WEIGHT_SCALE_SHAPE, Reason.BIAS_NOT_CONSTANT,
               Reason.BIAS_SHAPE, Reason.FLOAT_OUTPUT_SCALED, Reason.GEMM_ATTRIBUTES, Reason.WEIGHT_NOT_2D)

    def check(self, node: ir.Node) -> IntegerOp | Rejection:
        operands = signed_operands(node, zero_point(input_at(node, 2)), None, input_at(node, 3), input_at(node, 5))
        if isinstance(operands, Rejection):
            return operands
        x_zero_point, weight = operands
        attrs = {a.name: a.value for a in node.attributes.values()}
        if attrs.get("transA", 0):
            return reject(node, Reason.GEMM_ATTRIBUTES)
        if weight.ndim != 2:
            return reject(node, Reason.WEIGHT_NOT_2D, op_type=node.op_type)
        if attrs.get("transB", 0):
            weight = np.ascontiguousarray(weight.T)
        n = weight.shape[1]

        x_scale, w_scale = const(input_at(node, 1)), const(input_at(node, 4))
        y_scale_value, y_zp_value = input_at(node, 7), input_at(node, 8)
        y_scale = const(y_scale_value) if y_scale_value is not None else np.ones((), np.float32)
        y_zp = zero_point(y_zp_value) if y_zp_value is not None else None
        if x_scale is None or w_scale is None or y_scale is None or (y_zp_value is not None and y_zp is None):
            return reject(node, Reason.SCALES_NOT_CONSTANT)
        if y_zp_value is None and y_scale_value is not None:
            return reject(node, Reason.FLOAT_OUTPUT_SCALED)
        if w_scale.size not in (1, n):
            return reject(node, Reason.WEIGHT_SCALE_SHAPE)

        bias_value = input_at(node, 6)
        bias = const(bias_value)
        if bias_value is not None and bias is None:
            return reject(node, Reason.BIAS_NOT_CONSTANT)
        if bias is not None:
            # Gemm broadcasts C to (M, N): one value or one per column (shape (N,), (1, N)) is a bias
            if bias.size != 1 and not (bias.ndim in (1, 2) and bias.shape[-1] == n and bias.size == n):
                return reject(node, Reason.BIAS_SHAPE, shape=list(bias.shape))
            bias = np.broadcast_to(bias.astype(np.int32).ravel(), (n,)).copy()

        alpha = np.float32(attrs.get("alpha", 1.0))
        op = IntegerOp(node=node, kind="matmul", form="qlinear", x=node.inputs[0], x_zero_point=x_zero_point,
                       weight=weight, x_scale=float(alpha * np.float32(x_scale.ravel()[0])),
                       w_scale=w_scale.astype(np.float32).ravel(), bias=bias, output=node.outputs[0])
        if y_zp is not None:
            op.y_scale, op.y_zero_point, op.y_dtype = float(y_scale.ravel()[0]), int(y_zp[0][0]), y_zp[1]
        return op

    def rewrite(self, graph: ir.Graph, op: IntegerOp, table: Multiplier, lowering: str, bitwise: bool,
                linear: np.ndarray | None = None) -> int | None:
        weight = op.node.inputs[3]
        if lowering == "decomposed" and mask_term(table.decomposition) is not None and weight.const_value is None \
                and linear is None:
            # the masks are applied to B as stored, which only an initializer holds
            transposed = op.node.attributes.get("transB") is not None and op.node.attributes["transB"].value
            stored = np.ascontiguousarray(op.weight.T) if transposed else op.weight
            builder = Builder(graph, naming.rewrite_scope(op.name) + "/qgemm")
            op.node.replace_input_with(3, builder.const(stored.astype(np.int8), "stored_weight"))
        return super().rewrite(graph, op, table, lowering, bitwise, linear)
