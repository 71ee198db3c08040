"""QLinearConv: onnxruntime's QOperator convolution, requantization included.

    y_q = QLinearConv(x_q, sx, zx, w_q, sw, 0, sy, zy[, b_int32])

    acc[n, m, p] = sum_{c, r} (x_q - zx)[n, c, p + r] * w_q[m, c, r]
    y_q = saturate(round(float(acc + b) * sx * sw / sy) + zy)
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from passes.candidates import IntegerOp
from passes.reasons import Reason, Rejection, reject
from passes.rules._operands import QLINEAR_REASONS, const, conv_attributes, input_at, qlinear_operands
from passes.rules._rule import Pattern, Rule


class QLinearConvRule(Rule):
    name = "qlinear_conv"
    pattern = Pattern(("QLinearConv",))
    reasons = QLINEAR_REASONS + (Reason.CONV_RANK, Reason.AUTO_PAD, Reason.BIAS_NOT_CONSTANT)

    def check(self, node: ir.Node) -> IntegerOp | Rejection:
        op = qlinear_operands(node, "conv")
        if isinstance(op, Rejection):
            return op
        attributes = conv_attributes(node, op.weight)
        if isinstance(attributes, Rejection):
            return attributes
        op.attributes = attributes
        bias_value = input_at(node, 8)
        bias = const(bias_value)
        if bias_value is not None and bias is None:
            return reject(node, Reason.BIAS_NOT_CONSTANT)
        op.bias = bias.astype(np.int32).ravel() if bias is not None else None
        return op
