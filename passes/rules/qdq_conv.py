"""QDQ Conv: a float Conv between DequantizeLinear operands, as onnxruntime's quantizer and
`export.quantize` write it.

    x_q -> DQ(sx, zx) -> Conv(strides, pads, dilations, group) -> [Q(sy, zy) ->] y
    w_q -> DQ(sw, 0) -'   ^- [DQ(b_int32, sx * sw)]

    acc[n, m, p] = sum_{c, r} (x_q - zx)[n, c, p + r] * w_q[m, c, r],   y = requantize(acc + b)
"""

from __future__ import annotations

import onnx_ir as ir

from passes.candidates import IntegerOp
from passes.reasons import Reason, Rejection
from passes.rules._operands import QDQ_REASONS, conv_attributes, input_at, qdq_operands, qdq_output
from passes.rules._rule import Pattern, Rule


class QDQConvRule(Rule):
    name = "qdq_conv"
    pattern = Pattern(("Conv",))
    reasons = QDQ_REASONS + (Reason.CONV_RANK, Reason.AUTO_PAD)

    def check(self, node: ir.Node) -> IntegerOp | Rejection:
        op = qdq_operands(node, "conv")
        if isinstance(op, Rejection):
            return op
        attributes = conv_attributes(node, op.weight)
        if isinstance(attributes, Rejection):
            return attributes
        op.attributes = attributes
        return qdq_output(op, input_at(node, 2))
