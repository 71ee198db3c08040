"""QLinearMatMul: onnxruntime's QOperator matrix product, requantization included.

    y_q = QLinearMatMul(x_q, sx, zx, w_q, sw, 0, sy, zy)

    acc[..., n] = sum_k (x_q - zx)[..., k] * w_q[k, n],   y_q = saturate(round(acc * sx * sw / sy) + zy)
"""

from __future__ import annotations

import onnx_ir as ir

from passes.candidates import IntegerOp
from passes.reasons import Reason, Rejection, reject
from passes.rules._operands import QLINEAR_REASONS, qlinear_operands
from passes.rules._rule import Pattern, Rule


class QLinearMatMulRule(Rule):
    name = "qlinear_matmul"
    pattern = Pattern(("QLinearMatMul",))
    reasons = QLINEAR_REASONS + (Reason.WEIGHT_NOT_2D,)

    def check(self, node: ir.Node) -> IntegerOp | Rejection:
        op = qlinear_operands(node, "matmul")
        if isinstance(op, Rejection):
            return op
        if op.weight.ndim != 2:
            return reject(node, Reason.WEIGHT_NOT_2D, op_type=node.op_type)
        return op
