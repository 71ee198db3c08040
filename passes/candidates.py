"""Find the approximable integer products of a quantized ONNX model.

An approximable op is a Conv, Gemm or MatMul whose two operands are 8-bit integers: in QDQ
form (`DQ(x_q) -> Conv <- DQ(w_q)`, optionally `-> Q`), as QLinearConv / QLinearMatMul, or as
ConvInteger / MatMulInteger. Each is described uniformly by an `IntegerOp`:

    acc[n, m, ...] = sum_k a[n, k, ...] * w[k, m]           a = x_q - x_zero_point (signed 8-bit)
    y = requantize(acc + bias)                                (QDQ / QLinear forms)

The signed activation is `x_q - zp` for uint8 with zp 128 or int8 with zp 0; any other zero
point is asymmetric and the op is skipped with that reason, as is a weight that is not a
constant int8 with zero point 0. Nothing is approximated by mistake: every Conv/Gemm/MatMul
that is not rewritten gets a `Skip` saying why.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx_ir as ir

APPROXIMABLE = {"Conv", "Gemm", "MatMul", "QLinearConv", "QLinearMatMul", "ConvInteger", "MatMulInteger"}
SIGNED_ZERO_POINTS = {"uint8": 128, "int8": 0}


@dataclass
class IntegerOp:
    """One approximable product, in a form every lowering can rewrite."""

    node: ir.Node  # the Conv/Gemm/MatMul/QLinear*/...Integer node
    kind: str  # "conv" | "matmul"
    form: str  # "qdq" | "qlinear" | "integer"
    x: ir.Value  # 8-bit activation (quantized tensor)
    x_zero_point: int  # 128 (uint8) or 0 (int8)
    weight: np.ndarray  # int8; conv (M, C/g, *k); matmul (K, N)
    attributes: dict = field(default_factory=dict)  # conv strides/pads/dilations/group/kernel_shape
    x_scale: float | None = None  # activation scale (QDQ / QLinear)
    w_scale: np.ndarray | None = None  # per output channel (or one value)
    bias: np.ndarray | None = None  # int32 per output channel, at scale x_scale * w_scale
    float_bias: ir.Value | None = None  # a bias the graph adds in float (QDQ without quantized bias)
    y_scale: float | None = None  # requantization target: set when the output is quantized
    y_zero_point: int | None = None
    y_dtype: str | None = None
    output: ir.Value | None = None  # the value the rewrite replaces
    removable: list = field(default_factory=list)  # nodes made dead by the rewrite

    @property
    def name(self) -> str:
        return self.node.name or self.node.outputs[0].name

    @property
    def reduction(self) -> int:
        """K: products summed into one output (what int32 overflow is checked against)."""
        if self.kind == "conv":
            return int(np.prod(self.weight.shape[1:]))
        return int(self.weight.shape[0])

    @property
    def out_channels(self) -> int:
        return int(self.weight.shape[0] if self.kind == "conv" else self.weight.shape[1])


@dataclass
class Skip:
    node: ir.Node
    reason: str

    @property
    def name(self) -> str:
        return self.node.name or self.node.outputs[0].name


def _through_identity(value: ir.Value | None) -> ir.Node | None:
    node = value.producer() if value is not None else None
    while node is not None and node.op_type == "Identity":
        node = node.inputs[0].producer() if node.inputs[0] is not None else None
    return node


def _const(value: ir.Value | None) -> np.ndarray | None:
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


def _input(node: ir.Node, i: int) -> ir.Value | None:
    return node.inputs[i] if i < len(node.inputs) else None


def _zero_point(value: ir.Value | None, dtype_if_missing: str = "uint8") -> tuple[np.ndarray, str] | None:
    if value is None:
        return np.zeros(1, dtype=dtype_if_missing), dtype_if_missing
    array = _const(value)
    if array is None:
        return None
    return array.ravel(), array.dtype.name


def _activation(value_dtype: str, zp: np.ndarray) -> str | None:
    """Why the activation is not a signed 8-bit operand, or None when it is."""
    expected = SIGNED_ZERO_POINTS.get(value_dtype)
    if expected is None:
        return f"activation dtype {value_dtype} is not 8-bit"
    if zp.size != 1 or int(zp[0]) != expected:
        return f"asymmetric activation: {value_dtype} zero point {zp.tolist()} (needs {expected})"
    return None


def _weight(array: np.ndarray | None, zp: tuple[np.ndarray, str] | None) -> str | None:
    if array is None:
        return "weight is not a constant (activation x activation products are not approximated)"
    if array.dtype != np.int8:
        return f"weight dtype {array.dtype} (needs int8)"
    if zp is None or np.any(zp[0] != 0):
        return "weight zero point is not 0"
    return None


def _conv_attributes(node: ir.Node, weight: np.ndarray) -> tuple[dict | None, str | None]:
    spatial = weight.ndim - 2
    if spatial not in (1, 2):
        return None, f"{spatial}-D convolution"
    attrs = {a.name: a.value for a in node.attributes.values()}
    auto_pad = attrs.get("auto_pad", "NOTSET")
    if auto_pad not in ("NOTSET", b"NOTSET"):
        return None, f"unsupported attribute auto_pad={auto_pad}"
    out = {
        "strides": list(attrs.get("strides", [1] * spatial)),
        "pads": list(attrs.get("pads", [0] * 2 * spatial)),
        "dilations": list(attrs.get("dilations", [1] * spatial)),
        "group": int(attrs.get("group", 1)),
        "kernel_shape": list(weight.shape[2:]),
    }
    return out, None


def _single_consumer(value: ir.Value, op_type: str) -> ir.Node | None:
    users = [use.node if hasattr(use, "node") else use[0] for use in value.uses()]
    if len(users) == 1 and users[0].op_type == op_type and not value.is_graph_output():
        return users[0]
    return None


def _describe_qdq(node: ir.Node) -> IntegerOp | Skip:
    dq_x, dq_w = _through_identity(node.inputs[0]), _through_identity(node.inputs[1])
    if dq_x is None or dq_x.op_type != "DequantizeLinear":
        return Skip(node, "not quantized: the activation input is float")
    if dq_w is None or dq_w.op_type != "DequantizeLinear":
        return Skip(node, "not quantized: the weight input is float")
    x = dq_x.inputs[0]
    zp = _zero_point(_input(dq_x, 2))
    if zp is None:
        return Skip(node, "activation zero point is not a constant")
    x_dtype = x.dtype.name.lower() if x.dtype is not None else zp[1]
    reason = _activation(x_dtype, zp[0])
    if reason:
        return Skip(node, reason)
    weight = _const(dq_w.inputs[0])
    reason = _weight(weight, _zero_point(_input(dq_w, 2), "int8"))
    if reason:
        return Skip(node, reason)
    x_scale = _const(dq_x.inputs[1])
    w_scale = _const(dq_w.inputs[1])
    if x_scale is None or w_scale is None or x_scale.size != 1:
        return Skip(node, "scales are not constants (or the activation is per-channel)")
    op = IntegerOp(node=node, kind="conv" if node.op_type == "Conv" else "matmul", form="qdq", x=x,
                   x_zero_point=int(zp[0][0]), weight=weight, x_scale=float(x_scale.ravel()[0]),
                   w_scale=w_scale.astype(np.float32).ravel())
    if node.op_type == "Conv":
        attrs, reason = _conv_attributes(node, weight)
        if reason:
            return Skip(node, reason)
        op.attributes = attrs
        bias_value = _input(node, 2)
    elif node.op_type == "Gemm":
        attrs = {a.name: a.value for a in node.attributes.values()}
        if attrs.get("transA", 0) or attrs.get("alpha", 1.0) != 1.0 or attrs.get("beta", 1.0) != 1.0:
            return Skip(node, "unsupported attribute: Gemm with transA, alpha or beta")
        if weight.ndim != 2:
            return Skip(node, "Gemm weight is not 2-D")
        if attrs.get("transB", 0):
            op.weight = np.ascontiguousarray(weight.T)
        bias_value = _input(node, 2)
    else:
        if weight.ndim != 2:
            return Skip(node, "MatMul weight is not 2-D")
        bias_value = None
    if op.w_scale.size not in (1, op.out_channels):
        return Skip(node, "weight scale is neither per-tensor nor per output channel")
    if bias_value is not None:
        dq_b = _through_identity(bias_value)
        if dq_b is not None and dq_b.op_type == "DequantizeLinear" and _const(dq_b.inputs[0]) is not None \
                and _const(dq_b.inputs[0]).dtype == np.int32:
            op.bias = _const(dq_b.inputs[0]).astype(np.int32).ravel()
            op.removable.append(dq_b)
        else:
            op.float_bias = bias_value
    op.removable += [dq_w]
    q = _single_consumer(node.outputs[0], "QuantizeLinear")
    if q is not None:
        y_scale, y_zp = _const(q.inputs[1]), _zero_point(_input(q, 2))
        if y_scale is not None and y_scale.size == 1 and y_zp is not None and y_zp[0].size == 1:
            op.y_scale, op.y_zero_point, op.y_dtype = float(y_scale.ravel()[0]), int(y_zp[0][0]), y_zp[1]
            op.output = q.outputs[0]
            op.removable.insert(0, q)
    if op.output is None:
        op.output = node.outputs[0]
    return op


def _describe_qlinear(node: ir.Node) -> IntegerOp | Skip:
    x = node.inputs[0]
    zp = _zero_point(node.inputs[2])
    if zp is None:
        return Skip(node, "activation zero point is not a constant")
    reason = _activation(zp[1], zp[0])
    if reason:
        return Skip(node, reason)
    weight = _const(node.inputs[3])
    reason = _weight(weight, _zero_point(node.inputs[5], "int8"))
    if reason:
        return Skip(node, reason)
    x_scale, w_scale = _const(node.inputs[1]), _const(node.inputs[4])
    y_scale, y_zp = _const(node.inputs[6]), _zero_point(node.inputs[7])
    if x_scale is None or w_scale is None or y_scale is None or y_zp is None:
        return Skip(node, "scales are not constants")
    op = IntegerOp(node=node, kind="conv" if node.op_type == "QLinearConv" else "matmul", form="qlinear",
                   x=x, x_zero_point=int(zp[0][0]), weight=weight, x_scale=float(x_scale.ravel()[0]),
                   w_scale=w_scale.astype(np.float32).ravel(), y_scale=float(y_scale.ravel()[0]),
                   y_zero_point=int(y_zp[0][0]), y_dtype=y_zp[1], output=node.outputs[0])
    if node.op_type == "QLinearConv":
        attrs, reason = _conv_attributes(node, weight)
        if reason:
            return Skip(node, reason)
        op.attributes = attrs
        bias = _const(_input(node, 8))
        if _input(node, 8) is not None and bias is None:
            return Skip(node, "bias is not a constant")
        op.bias = bias.astype(np.int32).ravel() if bias is not None else None
    elif weight.ndim != 2:
        return Skip(node, "QLinearMatMul weight is not 2-D")
    return op


def _describe_integer(node: ir.Node) -> IntegerOp | Skip:
    x = node.inputs[0]
    x_dtype = x.dtype.name.lower() if x.dtype is not None else "uint8"
    zp = _zero_point(_input(node, 2), x_dtype)
    if zp is None:
        return Skip(node, "activation zero point is not a constant")
    reason = _activation(x_dtype, zp[0])
    if reason:
        return Skip(node, reason)
    weight = _const(node.inputs[1])
    reason = _weight(weight, _zero_point(_input(node, 3), "int8"))
    if reason:
        return Skip(node, reason)
    op = IntegerOp(node=node, kind="conv" if node.op_type == "ConvInteger" else "matmul", form="integer",
                   x=x, x_zero_point=int(zp[0][0]), weight=weight, output=node.outputs[0])
    if node.op_type == "ConvInteger":
        attrs, reason = _conv_attributes(node, weight)
        if reason:
            return Skip(node, reason)
        op.attributes = attrs
    elif weight.ndim != 2:
        return Skip(node, "MatMulInteger weight is not 2-D")
    return op


def describe(node: ir.Node) -> IntegerOp | Skip:
    """Uniform description of one Conv/Gemm/MatMul-family node, or why it cannot be rewritten."""
    if node.domain not in ("", "ai.onnx"):
        return Skip(node, f"custom domain {node.domain}")
    if node.op_type in ("Conv", "Gemm", "MatMul"):
        return _describe_qdq(node)
    if node.op_type in ("QLinearConv", "QLinearMatMul"):
        return _describe_qlinear(node)
    return _describe_integer(node)


def find_candidates(graph: ir.Graph) -> list[IntegerOp | Skip]:
    """Every Conv/Gemm/MatMul-family node of the graph, in topological order, described."""
    return [describe(node) for node in graph if node.op_type in APPROXIMABLE and node.domain in ("", "ai.onnx")]
