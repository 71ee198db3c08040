"""ConvInteger: the integer convolution, int32 accumulator out (no requantization).

    acc = ConvInteger(x_q, w_q[, zx[, 0]])
    acc[n, m, p] = sum_{c, r} (x_q - zx)[n, c, p + r] * w_q[m, c, r]
"""

from __future__ import annotations

import onnx_ir as ir

from passes.candidates import IntegerOp
from passes.reasons import Rejection
from passes.rules._operands import CONV_REASONS, INTEGER_REASONS, integer_operands, with_conv_attributes
from passes.rules._rule import Pattern, Rule


class ConvIntegerRule(Rule):
    name = "conv_integer"
    pattern = Pattern(("ConvInteger",))
    reasons = INTEGER_REASONS + CONV_REASONS

    def check(self, node: ir.Node) -> IntegerOp | Rejection:
        op = with_conv_attributes(integer_operands(node, "conv"))
        if isinstance(op, Rejection):
            return op
        return op
