"""MatMulInteger: the integer matrix product, int32 accumulator out (no requantization).

    acc = MatMulInteger(x_q, w_q[, zx[, 0]])
    acc[..., n] = sum_k (x_q - zx)[..., k] * w_q[k, n]
"""

from __future__ import annotations

import onnx_ir as ir

from passes.candidates import IntegerOp
from passes.reasons import Reason, Rejection, reject
from passes.rules._operands import INTEGER_REASONS, integer_operands
from passes.rules._rule import Pattern, Rule


class MatMulIntegerRule(Rule):
    name = "matmul_integer"
    pattern = Pattern(("MatMulInteger",))
    reasons = INTEGER_REASONS + (Reason.WEIGHT_NOT_2D,)

    def check(self, node: ir.Node) -> IntegerOp | Rejection:
        op = integer_operands(node, "matmul")
        if isinstance(op, Rejection):
            return op
        if op.weight.ndim != 2:
            return reject(node, Reason.WEIGHT_NOT_2D, op_type=node.op_type)
        return op
