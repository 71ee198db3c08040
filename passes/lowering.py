"""Lowerings of one approximable product (`IntegerOp`) to ONNX nodes.

`lut`: the axmoe custom op with the multiplier's table,

    acc = axmoe.ApproxConvInteger(x_q, w, x_zp, 0, LUT)   (or ApproxMatMulInteger)

`decomposed`: standard ONNX ops only, from the exact decomposition
mul(a, b) = sum_t c_t (a & ma_t) (b & mb_t) (`multipliers.decompose`):

- one masked product (operand-mask multipliers): the op keeps its form (QDQ / QLinear /
  Integer); the weight initializer is pre-masked and a BitwiseAnd masks the activation's
  stored byte, so runtimes still fuse it into their fast int8 kernels. For uint8 storage
  q = a + 128: q & m == (a & m) + 128 when m keeps bit 7, else (q & m) | 0x80 does.
- several terms: acc = sum_t w_t * ConvInteger(x_t, W_t) (or MatMulInteger), x_t the masked
  (and, for low-bit masks, right-shifted) activation byte, W_t the masked, shifted weight,
  w_t = c_t << (shift_a + shift_b). The terms read the activation as uint8 with zero point
  128: an int8 activation (zero point 0, q = a) is re-encoded once, u = q + 128, the same
  signed operand (`uint8_activation`), since BitShift, which the low-bit fields (and every
  mask below opset 18) are built from, takes unsigned types only.

`linear` compensation (`passes.compensate`, integer convention `modelfile.ops.LINEAR_FRACTION_BITS`):
with coefficients g [M] every lowering adds t_o = floor((g_o * S + 2^(F-1)) / 2^F) to the
accumulator before the bias, S = sum of the signed activations over the output's receptive
field. `lut`: the custom op's optional `linear` input (computed inside the kernel).
`decomposed` (`add_linear`, standard ops): S = ConvInteger(x, ones [G, C/G, k...], group=G)
(MatMulInteger(x, ones [K, 1]) for a matmul), one reduction per output pixel, 1/M of the op's
MACs; then Cast int64, Mul g, Add 2^(F-1), v - Mod(v, 2^F) (Mod of integers takes the
divisor's sign, so this is the floor multiple) and an exact Div by 2^F, Cast int32, Add. An
operand-mask multiplier with a linear term takes the one-term product path (the fused int8
op has no place for the term).

Both add the int32 bias and requantize with the model's own scales, as onnxruntime's
QLinearConv does: y_q = saturate(round_half_even(float32(acc + b) * (s_x * s_w / s_y)) + z_y);
an op whose output stays float gets y = float32(acc) * (s_x * s_w) (+ its float bias).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import onnx_ir as ir

from modelfile.ops import APPROX_CONV_INTEGER, APPROX_MATMUL_INTEGER, DOMAIN, LINEAR_FRACTION_BITS, VERSION
from multipliers.decompose import Decomposition, Term
from multipliers.lut import bit_runs, signed_mask
from passes.candidates import IntegerOp
from passes.reasons import Reason


class Builder:
    """Collects the new nodes of one rewrite; constants become initializers.

    `bitwise`: the model's opset has BitwiseAnd/Or (18+); without them masks of uint8 bytes
    are built from BitShift and Mod (opset 11+).
    """

    def __init__(self, graph: ir.Graph, prefix: str, bitwise: bool = True):
        self.graph = graph
        self.prefix = prefix
        self.bitwise = bitwise
        self.opset = graph.opset_imports.get("", graph.opset_imports.get("ai.onnx", 1))
        self.nodes: list[ir.Node] = []
        self._count = 0

    def _name(self, what: str) -> str:
        self._count += 1
        return f"{self.prefix}/{what}_{self._count}"

    def const(self, array: np.ndarray, what: str = "const", name: str | None = None) -> ir.Value:
        if name is not None and name in self.graph.initializers:
            return self.graph.initializers[name]
        array = np.array(array, order="C")  # not ascontiguousarray: it makes a 0-d array 1-d
        tensor = ir.tensor(array, name=name or self._name(what))
        value = ir.Value(name=tensor.name, shape=ir.Shape(array.shape), type=ir.TensorType(tensor.dtype),
                         const_value=tensor)
        self.graph.register_initializer(value)
        return value

    def op(self, op_type: str, inputs, attributes=None, domain: str = "", what: str | None = None) -> ir.Value:
        node = ir.node(op_type, inputs, attributes or {}, domain=domain, name=self._name(what or op_type),
                       version=VERSION if domain == DOMAIN else None)
        node.outputs[0].name = node.name + "_out"
        self.nodes.append(node)
        return node.outputs[0]


def _x_dtype(op: IntegerOp) -> np.dtype:
    return np.dtype(np.uint8) if op.x_zero_point == 128 else np.dtype(np.int8)


def _channel_shape(op: IntegerOp) -> tuple[int, ...]:
    if op.kind == "conv":
        return (1, op.out_channels) + (1,) * (op.weight.ndim - 2)
    return (op.out_channels,)


def _conv_attrs(op: IntegerOp) -> dict:
    return {k: v for k, v in op.attributes.items()}


def requantize(b: Builder, op: IntegerOp, acc: ir.Value) -> ir.Value:
    """int32 accumulator -> the value that replaces `op.output` (see module docstring)."""
    if op.form == "integer":
        return acc
    shape = _channel_shape(op)
    if op.bias is not None:
        acc = b.op("Add", [acc, b.const(op.bias.astype(np.int32).reshape(shape), "bias")])
    w_scale = np.broadcast_to(op.w_scale, (op.out_channels,)).astype(np.float32)
    product = (np.float32(op.x_scale) * w_scale).astype(np.float32)
    real = b.op("Cast", [acc], {"to": ir.DataType.FLOAT})
    if op.y_scale is not None:
        multiplier = (product / np.float32(op.y_scale)).astype(np.float32).reshape(shape)
        scaled = b.op("Mul", [real, b.const(multiplier, "requant_scale")])
        zero_point = np.array(op.y_zero_point, dtype=np.dtype(op.y_dtype))
        return b.op("QuantizeLinear", [scaled, b.const(np.array(1.0, np.float32), "one"),
                                       b.const(zero_point, "y_zero_point")])
    out = b.op("Mul", [real, b.const(product.reshape(shape), "dequant_scale")])
    if op.float_bias is not None:
        out = b.op("Add", [out, b.op("Reshape", [op.float_bias, b.const(np.array(shape, np.int64), "shape")])])
    return out


def lower_lut(b: Builder, op: IntegerOp, lut_value: ir.Value, linear: np.ndarray | None = None) -> ir.Value:
    """acc via axmoe.ApproxConvInteger / ApproxMatMulInteger (with the `linear` input when
    given: int64 g [M]), then requantize."""
    x_zp = b.const(np.array(op.x_zero_point, dtype=_x_dtype(op)), "x_zero_point")
    w_zp = b.const(np.array(0, np.int8), "w_zero_point")
    weight = b.const(op.weight.astype(np.int8), "weight")
    inputs = [op.x, weight, x_zp, w_zp, lut_value]
    if linear is not None:
        inputs.append(b.const(_checked_linear(op, linear), "linear"))
    if op.kind == "conv":
        acc = b.op(APPROX_CONV_INTEGER, inputs, _conv_attrs(op), domain=DOMAIN)
    else:
        acc = b.op(APPROX_MATMUL_INTEGER, inputs, domain=DOMAIN)
    return requantize(b, op, acc)


def _checked_linear(op: IntegerOp, linear: np.ndarray) -> np.ndarray:
    g = np.asarray(linear)
    if g.shape != (op.out_channels,) or not np.issubdtype(g.dtype, np.integer):
        raise ValueError(f"{op.name}: linear coefficients must be integers [{op.out_channels}], got "
                         f"{g.dtype} {list(g.shape)}")
    return g.astype(np.int64)


def linear_sum(b: Builder, op: IntegerOp) -> ir.Value:
    """int32 S: conv [N, G, *out] = ConvInteger(x, ones [G, C/G, k...], group=G); matmul
    [..., 1] = MatMulInteger(x, ones [K, 1]). x as the op stores it (zero point included)."""
    x_zp = b.const(np.array(op.x_zero_point, dtype=_x_dtype(op)), "x_zero_point")
    w_zp = b.const(np.array(0, np.int8), "w_zero_point")
    if op.kind == "conv":
        group = int(op.attributes.get("group", 1))
        ones = b.const(np.ones((group, *op.weight.shape[1:]), np.int8), "ones_kernel")
        return b.op("ConvInteger", [op.x, ones, x_zp, w_zp], _conv_attrs(op), what="linear_sum")
    ones = b.const(np.ones((op.weight.shape[0], 1), np.int8), "ones_column")
    return b.op("MatMulInteger", [op.x, ones, x_zp, w_zp], what="linear_sum")


def add_linear(b: Builder, op: IntegerOp, acc: ir.Value, linear: np.ndarray) -> ir.Value:
    """acc + floor((g * S + 2^(F-1)) / 2^F) per output channel, in standard ops (module docstring)."""
    g = _checked_linear(op, linear)
    s = b.op("Cast", [linear_sum(b, op)], {"to": ir.DataType.INT64}, what="linear_sum64")
    group = int(op.attributes.get("group", 1)) if op.kind == "conv" else 1
    if op.kind == "matmul":
        product = b.op("Mul", [s, b.const(g, "linear_g")])  # [..., 1] x [N]
    elif group == 1:
        product = b.op("Mul", [s, b.const(g.reshape((op.out_channels,) + (1,) * (op.weight.ndim - 2)), "linear_g")])
    else:  # S per group [N, G, *out] -> [N, G, 1, P] x g [G, M/G, 1] -> the accumulator's shape
        grouped = b.op("Reshape", [s, b.const(np.array([0, group, 1, -1], np.int64), "shape")])
        weighted = b.op("Mul", [grouped, b.const(g.reshape(group, -1, 1), "linear_g")])
        product = b.op("Reshape", [weighted, b.op("Shape", [acc])])
    half = b.op("Add", [product, b.const(np.array(1 << (LINEAR_FRACTION_BITS - 1), np.int64), "half")])
    unit = b.const(np.array(1 << LINEAR_FRACTION_BITS, np.int64), "unit")
    floored = b.op("Sub", [half, b.op("Mod", [half, unit])])  # the multiple of 2^F at or below
    term = b.op("Cast", [b.op("Div", [floored, unit])], {"to": ir.DataType.INT32}, what="linear_term")
    return b.op("Add", [acc, term], what="linear_add")


class MaskUnsupported(ValueError):
    pass


def byte_field(b: Builder, x: ir.Value, mask: int, shift_down: bool) -> ir.Value:
    """uint8 `x & mask`, or `(x & mask) >> lowest set bit` when `shift_down`."""
    low = (mask & -mask).bit_length() - 1
    if b.bitwise:
        out = b.op("BitwiseAnd", [x, b.const(np.array(mask, np.uint8), "mask")])
        if shift_down and low:
            out = b.op("BitShift", [out, b.const(np.array(low, np.uint8), "shift")], {"direction": "RIGHT"})
        return out
    # x & mask = sum over runs (lo, n) of ((x >> lo) mod 2^n) << lo, runs being disjoint bits
    out = None
    for lo, n in bit_runs(mask):
        part = x if lo == 0 else b.op("BitShift", [x, b.const(np.array(lo, np.uint8), "shift")], {"direction": "RIGHT"})
        if lo + n < 8:
            part = b.op("Mod", [part, b.const(np.array(1 << n, np.uint8), "modulus")])
        place = lo - low if shift_down else lo
        if place:
            part = b.op("BitShift", [part, b.const(np.array(place, np.uint8), "shift")], {"direction": "LEFT"})
        out = part if out is None else b.op("Add", [out, part])
    return out


def mask_activation(b: Builder, op: IntegerOp, mask: int) -> ir.Value:
    """The stored activation byte with the signed operand masked: a & mask."""
    if mask == 0xFF:
        return op.x
    if op.x_zero_point == 0:  # int8 storage holds a itself
        if not b.bitwise:
            raise MaskUnsupported(Reason.INT8_MASK_NEEDS_BITWISE.message())
        return b.op("BitwiseAnd", [op.x, b.const(np.array(signed_mask(mask), np.int8), "mask")])
    masked = byte_field(b, op.x, mask, shift_down=False)
    if mask & 0x80:
        return masked
    if b.bitwise:
        return b.op("BitwiseOr", [masked, b.const(np.array(0x80, np.uint8), "sign_bias")])
    return b.op("Add", [masked, b.const(np.array(0x80, np.uint8), "sign_bias")])


def uint8_activation(b: Builder, op: IntegerOp) -> IntegerOp:
    """`op` reading its activation as uint8 with zero point 128: `op` itself when it does; for
    int8 storage (zero point 0, q = a) a copy reading u = q + 128, an exact re-encoding of the
    same signed operand (u - 128 = a), computed once per op.

    The cheapest exact re-encoding in standard ops, measured with onnxruntime 1.32 on a
    32x64x16x16 int8 activation, 1 thread, median of 7 x 20 runs:

        Cast(int8 -> uint8) -> Add(uint8 128)                 44 us   (opset 14+)
        Cast(int8 -> int16) -> Add(int16 128) -> Cast(uint8) 168 us   (opset 14+)
        DequantizeLinear(1, 0) -> QuantizeLinear(1, 128)     226 us   (opset 10+)
        Cast(int8 -> uint8) -> BitwiseXor(0x80)              238 us   (opset 18+)
        Cast(int8 -> int32) -> Add(int32 128) -> Cast(uint8) 373 us

    The first: Cast keeps the byte (q mod 256) and uint8 Add wraps mod 256, so the sum is
    q + 128 in [0, 255], i.e. q ^ 0x80. Add takes uint8 from opset 14; below it, DQ -> Q
    (exact: q is an integer in [-128, 127], q / 1 + 128 needs no rounding nor saturation).
    """
    if op.x_zero_point == 128:
        return op
    if b.opset >= 14:
        byte = b.op("Cast", [op.x], {"to": ir.DataType.UINT8}, what="x_byte")
        u = b.op("Add", [byte, b.const(np.array(128, np.uint8), "sign_bias")], what="x_uint8")
    else:
        real = b.op("DequantizeLinear", [op.x, b.const(np.array(1.0, np.float32), "one"),
                                         b.const(np.array(0, np.int8), "x_zero_point")], what="x_int")
        u = b.op("QuantizeLinear", [real, b.const(np.array(1.0, np.float32), "one"),
                                    b.const(np.array(128, np.uint8), "x_zero_point")], what="x_uint8")
    u.type, u.shape = ir.TensorType(ir.DataType.UINT8), op.x.shape
    return replace(op, x=u, x_zero_point=128)


def mask_weight(weight: np.ndarray, mask: int) -> np.ndarray:
    return (weight.astype(np.int16) & signed_mask(mask)).astype(np.int8)


def _term_operands(b: Builder, op: IntegerOp, term: Term) -> tuple[ir.Value, int, np.ndarray, int]:
    """(activation value, its zero point, int8 weight, integer weight of the product)."""
    shift = 0
    if op.x_zero_point == 128 and not term.mask_a & 0x80:
        # low-bit operand: (a & m) >> s, a small non-negative byte with zero point 0
        x_t, zp = byte_field(b, op.x, term.mask_a, shift_down=True), 0
        shift += term.shift_a
    else:
        x_t, zp = mask_activation(b, op, term.mask_a), op.x_zero_point
    w_t = mask_weight(op.weight, term.mask_b)
    if not term.mask_b & 0x80 and term.shift_b:
        w_t = (w_t >> term.shift_b).astype(np.int8)
        shift += term.shift_b
    return x_t, zp, w_t, term.coef << shift


def lower_decomposed_terms(b: Builder, op: IntegerOp, decomposition: Decomposition,
                           linear: np.ndarray | None = None) -> ir.Value:
    """acc = sum_t w_t * ConvInteger / MatMulInteger on masked operands (+ `add_linear` when
    `linear`, int64 g [M], is given), then requantize.

    The terms read the activation as uint8 (`uint8_activation`): the byte fields of
    `byte_field` shift with BitShift, which takes unsigned types only.
    """
    if not decomposition.terms:  # the zero multiplier
        raise ValueError("a multiplier whose products are all zero cannot be lowered")
    op = uint8_activation(b, op)
    acc = None
    for term in decomposition.terms:
        x_t, zp, w_t, weight = _term_operands(b, op, term)
        x_zp = b.const(np.array(zp, dtype=np.uint8), "x_zero_point")
        w_zp = b.const(np.array(0, np.int8), "w_zero_point")
        w_value = b.const(w_t, "weight")
        if op.kind == "conv":
            product = b.op("ConvInteger", [x_t, w_value, x_zp, w_zp], _conv_attrs(op))
        else:
            product = b.op("MatMulInteger", [x_t, w_value, x_zp, w_zp])
        if abs(weight) != 1:
            product = b.op("Mul", [product, b.const(np.array(abs(weight), np.int32), "term_weight")])
        if acc is None:
            acc = product if weight > 0 else b.op("Neg", [product])
        else:
            acc = b.op("Add" if weight > 0 else "Sub", [acc, product])
    if linear is not None:
        acc = add_linear(b, op, acc, linear)
    return requantize(b, op, acc)


def apply_masks_in_place(b: Builder, op: IntegerOp, term: Term) -> None:
    """Operand-mask multiplier: keep the op, mask its quantized operands (see module docstring)."""
    node = op.node
    if term.mask_a != 0xFF:
        masked = mask_activation(b, op, term.mask_a)
        if op.form == "qdq":
            dq_x = node.inputs[0].producer()
            while dq_x.op_type == "Identity":
                dq_x = dq_x.inputs[0].producer()
            new_dq = b.op("DequantizeLinear", [masked, *dq_x.inputs[1:]],
                          {a.name: a.value for a in dq_x.attributes.values()})
            node.replace_input_with(0, new_dq)
        else:
            node.replace_input_with(0, masked)
    if term.mask_b != 0xFF:
        if op.form == "qdq":
            dq_w = node.inputs[1].producer()
            while dq_w.op_type == "Identity":
                dq_w = dq_w.inputs[0].producer()
            stored = dq_w.inputs[0].const_value.numpy()
            new_w = b.const(mask_weight(stored, term.mask_b), "masked_weight")
            new_dq = b.op("DequantizeLinear", [new_w, *dq_w.inputs[1:]],
                          {a.name: a.value for a in dq_w.attributes.values()})
            node.replace_input_with(1, new_dq)
        else:
            index = 3 if op.form == "qlinear" else 1
            stored = node.inputs[index].const_value
            array = stored.numpy() if stored is not None else op.weight
            node.replace_input_with(index, b.const(mask_weight(array, term.mask_b), "masked_weight"))
