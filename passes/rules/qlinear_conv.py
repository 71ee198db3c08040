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
from passes.rules._operands import (CONV_REASONS, QLINEAR_REASONS, const,
                                     input_at, qlinear_operands, with_conv_attributes)
from passes.rules._rule import Pattern, Rule


class QLinearConvRule(Rule):
    name = "qlinear_conv"
    pattern = Pattern(("QLinearConv",))
    reasons = QLINEAR_REASONS + CONV_REASONS + (Reason.BIAS_NOT_CONSTANT,)

    def check(self, node: ir.Node) -> IntegerOp | Rejection:
        op = with_conv_attributes(qlinear_operands(node, "conv"))
        if isinstance(op, Rejection):
            return op
        bias_value = input_at(node, 8)
        bias = const(bias_value)
        if bias_value is not None and bias is None:
            return reject(node, Reason.BIAS_NOT_CONSTANT)
        op.bias = bias.astype(np.int32).ravel() if bias is not None else None
        return op
