"""QDQ Gemm / MatMul: a float Gemm or MatMul of a DequantizeLinear activation by a
DequantizeLinear constant weight (one rule: they differ only in Gemm's attributes and bias).

    x_q -> DQ(sx, zx) -> Gemm(transB) / MatMul -> [Q(sy, zy) ->] y
    w_q -> DQ(sw, 0) -'   ^- [DQ(b_int32, sx * sw)]  (Gemm only)

    acc[..., n] = sum_k (x_q - zx)[..., k] * W[k, n],   W = w_q, or w_q^T under transB
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from passes.candidates import IntegerOp
from passes.reasons import Reason, Rejection, reject
from passes.rules._operands import QDQ_REASONS, input_at, qdq_operands, qdq_output
from passes.rules._rule import Pattern, Rule


class QDQMatMulRule(Rule):
    name = "qdq_matmul"
    pattern = Pattern(("Gemm", "MatMul"))
    reasons = QDQ_REASONS + (Reason.GEMM_ATTRIBUTES, Reason.WEIGHT_NOT_2D)

    def check(self, node: ir.Node) -> IntegerOp | Rejection:
        op = qdq_operands(node, "matmul")
        if isinstance(op, Rejection):
            return op
        gemm = node.op_type == "Gemm"
        attrs = {a.name: a.value for a in node.attributes.values()}
        if gemm and (attrs.get("transA", 0) or attrs.get("alpha", 1.0) != 1.0 or attrs.get("beta", 1.0) != 1.0):
            return reject(node, Reason.GEMM_ATTRIBUTES)
        if op.weight.ndim != 2:
            return reject(node, Reason.WEIGHT_NOT_2D, op_type=node.op_type)
        if gemm and attrs.get("transB", 0):
            op.weight = np.ascontiguousarray(op.weight.T)
        return qdq_output(op, input_at(node, 2) if gemm else None)
