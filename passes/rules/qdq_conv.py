"""QDQ Conv: a float Conv between DequantizeLinear operands, as onnxruntime's quantizer and
`export.quantize` write it.

    x_q -> DQ(sx, zx) -> Conv(strides, pads, dilations, group) -> [Q(sy, zy) ->] y
    w_q -> DQ(sw, 0) -'   ^- [DQ(b_int32, sx * sw)]

    acc[n, m, p] = sum_{c, r} (x_q - zx)[n, c, p + r] * w_q[m, c, r],   y = requantize(acc + b)
"""

from __future__ import annotations

import onnx_ir as ir

from passes.candidates import IntegerOp
from passes.reasons import Rejection
from passes.rules._operands import (CONV_REASONS, QDQ_REASONS, input_at,
                                     qdq_operands, qdq_output, with_conv_attributes)
from passes.rules._rule import Pattern, Rule


class QDQConvRule(Rule):
    name = "qdq_conv"
    pattern = Pattern(("Conv",))
    reasons = QDQ_REASONS + CONV_REASONS

    def check(self, node: ir.Node) -> IntegerOp | Rejection:
        op = with_conv_attributes(qdq_operands(node, "conv"))
        if isinstance(op, Rejection):
            return op
        return qdq_output(op, input_at(node, 2))
