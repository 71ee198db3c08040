"""Why the approximation pass leaves an op as it is: every reason it reports, named.

A `Rejection` is one op with one `Reason` and the reason's message template filled in with
the op's particulars:

    Reason.ASYMMETRIC_ACTIVATION  "asymmetric activation: {dtype} zero point {zero_point} (needs {expected})"
    -> "asymmetric activation: uint8 zero point [3] (needs 128)"

Reports carry both, `reason` (the message) and `reason_code` (`Reason.code`, e.g.
"asymmetric_activation"): the message is for people, the code for scripts and tests. The
rules of `passes.rules` reject what their source form cannot express exactly; the pass
itself rejects what the plan asks for but cannot deliver bit-exactly (overflow, lowering).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

import onnx_ir as ir


@enum.unique
class Reason(enum.Enum):
    """A rejection reason; its value is the message template (`str.format` fields)."""

    # the op is not an 8-bit integer product (QDQ form)
    FLOAT_ACTIVATION = "not quantized: the activation input is float"
    FLOAT_WEIGHT = "not quantized: the weight input is float"
    # the activation is not a signed 8-bit operand a = x_q - zp
    ACTIVATION_ZERO_POINT_NOT_CONSTANT = "activation zero point is not a constant"
    ACTIVATION_NOT_8BIT = "activation dtype {dtype} is not 8-bit"
    ASYMMETRIC_ACTIVATION = "asymmetric activation: {dtype} zero point {zero_point} (needs {expected})"
    # the weight is not a constant signed 8-bit operand
    WEIGHT_NOT_CONSTANT = "weight is not a constant (activation x activation products are not approximated)"
    WEIGHT_NOT_INT8 = "weight dtype {dtype} (needs int8)"
    WEIGHT_ZERO_POINT_NONZERO = "weight zero point is not 0"
    WEIGHT_NOT_2D = "{op_type} weight is not 2-D"
    # the requantization cannot be rebuilt from constants
    QDQ_SCALES_NOT_CONSTANT = "scales are not constants (or the activation is per-channel)"
    SCALES_NOT_CONSTANT = "scales are not constants"
    DEQUANTIZED_NOT_FLOAT32 = ("dequantized to {dtype}: only float32 QDQ groups are rewritten (their float "
                               "rounding is what the integer requantization reproduces)")
    WEIGHT_SCALE_SHAPE = "weight scale is neither per-tensor nor per output channel"
    BIAS_NOT_CONSTANT = "bias is not a constant"
    BIAS_SHAPE = "bias of shape {shape} is neither one value nor one per output channel"
    FLOAT_OUTPUT_SCALED = "y_scale without y_zero_point: a float output divided by y_scale"
    # attributes the lowerings do not carry
    CONV_RANK = "{spatial}-D convolution"
    AUTO_PAD = "unsupported attribute auto_pad={auto_pad}"
    GEMM_ATTRIBUTES = "unsupported attribute: Gemm with transA, alpha or beta"
    # the plan's multiplier or lowering cannot be applied to this op bit-exactly
    INT32_OVERFLOW = "int32 overflow risk: max|LUT| {max_abs} x K {reduction} >= 2^31"
    NO_EXACT_DECOMPOSITION = "{multiplier} has no exact decomposition ({why}); use the lut lowering"
    INT8_MASK_NEEDS_BITWISE = "masking int8 activations needs BitwiseAnd (opset 18)"
    # where the op is
    IN_SUBGRAPH = "inside the {attribute} subgraph of {owner_type} node {owner}: only the main graph is rewritten"

    @property
    def code(self) -> str:
        """Stable identifier of the reason in reports: the member name in lower case."""
        return self.name.lower()

    def message(self, **fields) -> str:
        return self.value.format(**fields)


@dataclass(frozen=True)
class Rejection:
    """An op left as it is, and why."""

    node: ir.Node
    reason: Reason
    message: str

    @property
    def name(self) -> str:
        return self.node.name or self.node.outputs[0].name

    @property
    def code(self) -> str:
        return self.reason.code


def reject(node: ir.Node, reason: Reason, **fields) -> Rejection:
    """`node` rejected for `reason`, its message filled in with `fields`."""
    return Rejection(node, reason, reason.message(**fields))
