"""Reading the operands of a source form: constants, zero points, and the checks the rules share.

Every form reduces to a signed 8-bit activation `a = x_q - zp` (uint8 with zp 128 or int8
with zp 0) times a constant int8 weight with zero point 0; the readers below return the
`IntegerOp` for the operands a form carries, or the `Rejection` of the first operand that
does not fit. A value counts as a constant when it is an initializer or a Constant node,
possibly behind Identity nodes.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from passes.candidates import SIGNED_ZERO_POINTS, IntegerOp
from passes.reasons import Reason, Rejection, reject


def through_identity(value: ir.Value | None) -> ir.Node | None:
    """The producer of `value`, skipping Identity nodes."""
    node = value.producer() if value is not None else None
    while node is not None and node.op_type == "Identity":
        node = node.inputs[0].producer() if node.inputs[0] is not None else None
    return node


def const(value: ir.Value | None) -> np.ndarray | None:
    """Constant array behind `value` (initializer or Constant node, through Identity)."""
    while value is not None:
        if value.const_value is not None:
            return value.const_value.numpy()
        node = value.producer()
        if node is None:
            return None
        if node.op_type == "Constant" and "value" in node.attributes:
            return node.attributes["value"].as_tensor().numpy()
        if node.op_type != "Identity":
            return None
        value = node.inputs[0]
    return None


def input_at(node: ir.Node, i: int) -> ir.Value | None:
    """Input `i` of `node`, None when the node has fewer inputs."""
    return node.inputs[i] if i < len(node.inputs) else None


def zero_point(value: ir.Value | None, dtype_if_missing: str = "uint8") -> tuple[np.ndarray, str] | None:
    """(flat zero points, dtype name); zeros when the input is absent, None when not a constant."""
    if value is None:
        return np.zeros(1, dtype=dtype_if_missing), dtype_if_missing
    array = const(value)
    if array is None:
        return None
    return array.ravel(), array.dtype.name


def check_activation(node: ir.Node, dtype: str, zp: np.ndarray) -> Rejection | None:
    """Why the activation is not a signed 8-bit operand, or None when it is."""
    expected = SIGNED_ZERO_POINTS.get(dtype)
    if expected is None:
        return reject(node, Reason.ACTIVATION_NOT_8BIT, dtype=dtype)
    if zp.size != 1 or int(zp[0]) != expected:
        return reject(node, Reason.ASYMMETRIC_ACTIVATION, dtype=dtype, zero_point=zp.tolist(), expected=expected)
    return None


def check_weight(node: ir.Node, array: np.ndarray | None, zp: tuple[np.ndarray, str] | None) -> Rejection | None:
    """Why the weight is not a constant int8 with zero point 0, or None when it is."""
    if array is None:
        return reject(node, Reason.WEIGHT_NOT_CONSTANT)
    if array.dtype != np.int8:
        return reject(node, Reason.WEIGHT_NOT_INT8, dtype=array.dtype)
    if zp is None or np.any(zp[0] != 0):
        return reject(node, Reason.WEIGHT_ZERO_POINT_NONZERO)
    return None


def conv_attributes(node: ir.Node, weight: np.ndarray) -> dict | Rejection:
    """strides / pads / dilations / group / kernel_shape of a 1-D or 2-D convolution, explicit."""
    spatial = weight.ndim - 2
    if spatial not in (1, 2):
        return reject(node, Reason.CONV_RANK, spatial=spatial)
    attrs = {a.name: a.value for a in node.attributes.values()}
    auto_pad = attrs.get("auto_pad", "NOTSET")
    if auto_pad not in ("NOTSET", b"NOTSET"):
        return reject(node, Reason.AUTO_PAD, auto_pad=auto_pad)
    return {
        "strides": list(attrs.get("strides", [1] * spatial)),
        "pads": list(attrs.get("pads", [0] * 2 * spatial)),
        "dilations": list(attrs.get("dilations", [1] * spatial)),
        "group": int(attrs.get("group", 1)),
        "kernel_shape": list(weight.shape[2:]),
    }


#: why a convolution's attributes cannot be read (`conv_attributes`)
CONV_REASONS = (Reason.CONV_RANK, Reason.AUTO_PAD)


def with_conv_attributes(op: IntegerOp | Rejection) -> IntegerOp | Rejection:
    """A convolution's operands (or their rejection) with its attributes read, or why they cannot be."""
    if isinstance(op, Rejection):
        return op
    attributes = conv_attributes(op.node, op.weight)
    if isinstance(attributes, Rejection):
        return attributes
    op.attributes = attributes
    return op


def single_consumer(value: ir.Value, op_type: str) -> ir.Node | None:
    """The one node reading `value`, when it is an `op_type` and `value` is not a graph output."""
    users = [use.node if hasattr(use, "node") else use[0] for use in value.uses()]
    if len(users) == 1 and users[0].op_type == op_type and not value.is_graph_output():
        return users[0]
    return None


# ------------------------------------------------------------------------ the three families
#: what every 8-bit operand pair can fail on, whatever carries it
OPERAND_REASONS = (
    Reason.ACTIVATION_ZERO_POINT_NOT_CONSTANT, Reason.ACTIVATION_NOT_8BIT, Reason.ASYMMETRIC_ACTIVATION,
    Reason.WEIGHT_NOT_CONSTANT, Reason.WEIGHT_NOT_INT8, Reason.WEIGHT_ZERO_POINT_NONZERO,
)
#: every reason `qdq_operands` + `qdq_output` can reject with
QDQ_REASONS = (Reason.FLOAT_ACTIVATION, Reason.FLOAT_WEIGHT, *OPERAND_REASONS, Reason.QDQ_SCALES_NOT_CONSTANT,
               Reason.DEQUANTIZED_NOT_FLOAT32,
               Reason.WEIGHT_SCALE_SHAPE)
#: every reason `qlinear_operands` can reject with
QLINEAR_REASONS = (*OPERAND_REASONS, Reason.SCALES_NOT_CONSTANT)
#: every reason `integer_operands` can reject with
INTEGER_REASONS = OPERAND_REASONS


def signed_operands(node: ir.Node, zp: tuple[np.ndarray, str] | None, x_dtype: str | None,
                    weight_value: ir.Value | None,
                    weight_zp_value: ir.Value | None) -> tuple[int, np.ndarray] | Rejection:
    """(activation zero point, int8 weight) of a signed 8x8 product, or why it is not one; the
    checks every source form shares, in order. `x_dtype`: the activation's stored type (None:
    the zero point's)."""
    if zp is None:
        return reject(node, Reason.ACTIVATION_ZERO_POINT_NOT_CONSTANT)
    rejection = check_activation(node, x_dtype or zp[1], zp[0])
    if rejection:
        return rejection
    weight = const(weight_value)
    rejection = check_weight(node, weight, zero_point(weight_zp_value, "int8"))
    if rejection:
        return rejection
    return int(zp[0][0]), weight


def qdq_operands(node: ir.Node, kind: str) -> IntegerOp | Rejection:
    """`DQ(x_q, sx, zx) -> op <- DQ(w_q, sw, 0)`: the operands of a QDQ Conv / Gemm / MatMul
    (inputs 0 and 1, through Identity), before the form-specific checks."""
    dq_x, dq_w = through_identity(node.inputs[0]), through_identity(node.inputs[1])
    if dq_x is None or dq_x.op_type != "DequantizeLinear":
        return reject(node, Reason.FLOAT_ACTIVATION)
    if dq_w is None or dq_w.op_type != "DequantizeLinear":
        return reject(node, Reason.FLOAT_WEIGHT)
    x = dq_x.inputs[0]
    operands = signed_operands(node, zero_point(input_at(dq_x, 2)), x.dtype.name.lower() if x.dtype else None,
                               dq_w.inputs[0], input_at(dq_w, 2))
    if isinstance(operands, Rejection):
        return operands
    x_zero_point, weight = operands
    x_scale = const(dq_x.inputs[1])
    w_scale = const(dq_w.inputs[1])
    if x_scale is None or w_scale is None or x_scale.size != 1:
        return reject(node, Reason.QDQ_SCALES_NOT_CONSTANT)
    if x_scale.dtype != np.float32 or w_scale.dtype != np.float32:
        other = x_scale.dtype if x_scale.dtype != np.float32 else w_scale.dtype
        return reject(node, Reason.DEQUANTIZED_NOT_FLOAT32, dtype=other.name)
    return IntegerOp(node=node, kind=kind, form="qdq", x=x, x_zero_point=x_zero_point, weight=weight,
                     x_scale=float(x_scale.ravel()[0]), w_scale=w_scale.astype(np.float32).ravel())


def qdq_output(op: IntegerOp, bias_value: ir.Value | None) -> IntegerOp | Rejection:
    """Completes a QDQ `op`: its weight scale, its bias (`DQ(b_int32)` becomes `op.bias`, any
    other bias is added in float) and the `-> Q(y)` it feeds, when it feeds exactly one."""
    node = op.node
    if op.w_scale.size not in (1, op.out_channels):
        return reject(node, Reason.WEIGHT_SCALE_SHAPE)
    if bias_value is not None:
        dq_b = through_identity(bias_value)
        stored = const(dq_b.inputs[0]) if dq_b is not None and dq_b.op_type == "DequantizeLinear" else None
        # the int32 bias joins the accumulator only at its scale s_x * s_w; at any other scale
        # it is added in float, as onnxruntime does when it leaves such a node unfused
        b_scale = const(dq_b.inputs[1]) if stored is not None else None
        at_accumulator_scale = b_scale is not None and np.allclose(
            *np.broadcast_arrays(b_scale.astype(np.float32).ravel(), np.float32(op.x_scale) * op.w_scale),
            rtol=1e-6, atol=0.0)
        if stored is not None and stored.dtype == np.int32 and at_accumulator_scale:
            op.bias = stored.astype(np.int32).ravel()
            op.removable.append(dq_b)
        else:
            op.float_bias = bias_value
    op.removable += [through_identity(node.inputs[1])]
    q = single_consumer(node.outputs[0], "QuantizeLinear")
    if q is not None:
        y_scale, y_zp = const(q.inputs[1]), zero_point(input_at(q, 2))
        if y_scale is not None and y_scale.size == 1 and y_zp is not None and y_zp[0].size == 1:
            op.y_scale, op.y_zero_point, op.y_dtype = float(y_scale.ravel()[0]), int(y_zp[0][0]), y_zp[1]
            op.output = q.outputs[0]
            op.removable.insert(0, q)
    if op.output is None:
        op.output = node.outputs[0]
    return op


def qlinear_operands(node: ir.Node, kind: str) -> IntegerOp | Rejection:
    """`QLinearConv / QLinearMatMul(x, sx, zx, w, sw, zw, sy, zy[, b])`: the operands and the
    requantization, before the form-specific checks."""
    operands = signed_operands(node, zero_point(node.inputs[2]), None, node.inputs[3], node.inputs[5])
    if isinstance(operands, Rejection):
        return operands
    x_zero_point, weight = operands
    x_scale, w_scale = const(node.inputs[1]), const(node.inputs[4])
    y_scale, y_zp = const(node.inputs[6]), zero_point(node.inputs[7])
    if x_scale is None or w_scale is None or y_scale is None or y_zp is None:
        return reject(node, Reason.SCALES_NOT_CONSTANT)
    return IntegerOp(node=node, kind=kind, form="qlinear", x=node.inputs[0], x_zero_point=x_zero_point,
                     weight=weight, x_scale=float(x_scale.ravel()[0]), w_scale=w_scale.astype(np.float32).ravel(),
                     y_scale=float(y_scale.ravel()[0]), y_zero_point=int(y_zp[0][0]), y_dtype=y_zp[1],
                     output=node.outputs[0])


def integer_operands(node: ir.Node, kind: str) -> IntegerOp | Rejection:
    """`ConvInteger / MatMulInteger(x, w[, zx[, zw]])`: the operands, before the form-specific
    checks; an absent zero point is 0 of the operand's dtype."""
    x = node.inputs[0]
    x_dtype = x.dtype.name.lower() if x.dtype is not None else "uint8"
    operands = signed_operands(node, zero_point(input_at(node, 2), x_dtype), x_dtype, node.inputs[1],
                               input_at(node, 3))
    if isinstance(operands, Rejection):
        return operands
    x_zero_point, weight = operands
    return IntegerOp(node=node, kind=kind, form="integer", x=x, x_zero_point=x_zero_point,
                     weight=weight, output=node.outputs[0])
