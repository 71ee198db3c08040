"""ONNX schemas of the axmoe custom-op domain, so `onnx.checker` and shape inference accept
models that use them. Call `register_schemas()` (idempotent) before checking a model.

    axmoe.ApproxMul(A: int8[*], B: int8[*], LUT: int32[256, 256]) -> Y: int32[*]
        Y[i] = LUT[A[i] + 128, B[i] + 128]           (A and B have the same shape)

    axmoe.ApproxConvInteger(x, w, x_zero_point?, w_zero_point?, LUT, linear?) -> y: int32
        ONNX ConvInteger (same inputs, attributes, output shape) with every product
        LUT[a + 128, b + 128], a = x - x_zero_point, b = w. x: uint8 with zero point 128 or
        int8 with zero point 0; w: int8 with zero point 0; LUT: int32 [256, 256].
        linear (optional, int64 [M]): y[n, o, p] += floor((g_o * S + 2^(F-1)) / 2^F), the
        `linear` compensation term (LINEAR_FRACTION_BITS below), S = sum of a over the
        receptive field of (n, o, p).

    axmoe.ApproxMatMulInteger(A, B, a_zero_point?, b_zero_point?, LUT, linear?) -> Y: int32
        ONNX MatMulInteger likewise (numpy broadcasting of batch dims); linear int64 [N],
        S = sum_k a[..., m, k] of the row.

Omitted zero points are empty input names, as in ONNX. Type and shape inference of the two
integer ops is ConvInteger's / MatMulInteger's own (the trailing LUT and linear inputs do not
change the output), so rewritten graphs keep their inferred shapes.
"""

from __future__ import annotations

import onnx
from onnx import defs

DOMAIN = "axmoe"
VERSION = 1
APPROX_MUL = "ApproxMul"
APPROX_CONV_INTEGER = "ApproxConvInteger"
APPROX_MATMUL_INTEGER = "ApproxMatMulInteger"
OPS = (APPROX_MUL, APPROX_CONV_INTEGER, APPROX_MATMUL_INTEGER)

#: Fixed point of the `linear` compensation term (passes.compensate): a node's per-output-channel
#: coefficient g_o is an integer in units of 2^-LINEAR_FRACTION_BITS, and every backend adds
#:     t_o = floor((g_o * S + 2^(F-1)) / 2^F),   F = LINEAR_FRACTION_BITS, all in int64,
#: to the int32 accumulator, S = sum of the activation operand a = x - x_zero_point over the
#: output's receptive field (padding contributes 0; per group for grouped convolutions; the K
#: row of a MatMul).
LINEAR_FRACTION_BITS = 16

_Param = defs.OpSchema.FormalParameter
_Optional = defs.OpSchema.FormalParameterOption.Optional
_LUT_DOC = "multiplier table, int32 [256, 256]: LUT[a + 128, b + 128] = mul(a, b)"
_INT_TYPES = [
    ("T1", ["tensor(uint8)", "tensor(int8)"], "activation: uint8 (zero point 128) or int8 (zero point 0)"),
    ("T2", ["tensor(int8)"], "weight: int8 (zero point 0)"),
    ("T3", ["tensor(int32)"], "LUT and output"),
    ("T4", ["tensor(int64)"], "linear compensation coefficients"),
]
_LINEAR_DOC = ("linear compensation coefficients g, int64 [{channels}] (one per output channel): "
               "every output adds floor((g * S + 2^15) / 2^16), S the sum of its activation operands")


def _approx_mul_schema() -> defs.OpSchema:
    schema = defs.OpSchema(
        APPROX_MUL, DOMAIN, VERSION,
        doc="Elementwise approximate product through a multiplier LUT: "
            "Y[i] = LUT[A[i] + 128, B[i] + 128].",
        inputs=[
            _Param("A", "tensor(int8)", "first operands"),
            _Param("B", "tensor(int8)", "second operands, same shape as A"),
            _Param("LUT", "tensor(int32)", "table, shape (256, 256)"),
        ],
        outputs=[_Param("Y", "tensor(int32)", "products, shape of A")],
    )
    return schema


def _approx_conv_integer_schema() -> defs.OpSchema:
    ints = defs.OpSchema.AttrType.INTS
    schema = defs.OpSchema(
        APPROX_CONV_INTEGER, DOMAIN, VERSION,
        doc="ConvInteger with every product looked up in a multiplier LUT: "
            "LUT[x - x_zero_point + 128, w + 128].",
        inputs=[
            _Param("x", "T1", "input [N, C, L] or [N, C, H, W]"),
            _Param("w", "T2", "weight [M, C / group, kL] or [M, C / group, kH, kW]"),
            _Param("x_zero_point", "T1", "128 for uint8 x, 0 for int8 x (scalar)", param_option=_Optional),
            _Param("w_zero_point", "T2", "0 (scalar or [M])", param_option=_Optional),
            _Param("LUT", "T3", _LUT_DOC),
            _Param("linear", "T4", _LINEAR_DOC.format(channels="M"), param_option=_Optional),
        ],
        outputs=[_Param("y", "T3", "int32 [N, M, OL] or [N, M, OH, OW]")],
        type_constraints=_INT_TYPES,
        attributes=[
            defs.OpSchema.Attribute("auto_pad", onnx.helper.make_attribute("auto_pad", "NOTSET"),
                                    "NOTSET, SAME_UPPER, SAME_LOWER or VALID"),
            defs.OpSchema.Attribute("dilations", ints, "dilation per spatial axis", required=False),
            defs.OpSchema.Attribute("group", onnx.helper.make_attribute("group", 1), "number of groups"),
            defs.OpSchema.Attribute("kernel_shape", ints, "must match w's spatial shape", required=False),
            defs.OpSchema.Attribute("pads", ints, "[begin..., end...] per spatial axis", required=False),
            defs.OpSchema.Attribute("strides", ints, "stride per spatial axis", required=False),
        ],
    )
    schema.set_type_and_shape_inference_function(defs.get_schema("ConvInteger").get_type_and_shape_inference_function())
    return schema


def _approx_matmul_integer_schema() -> defs.OpSchema:
    schema = defs.OpSchema(
        APPROX_MATMUL_INTEGER, DOMAIN, VERSION,
        doc="MatMulInteger with every product looked up in a multiplier LUT: "
            "LUT[A - a_zero_point + 128, B + 128].",
        inputs=[
            _Param("A", "T1", "left operand [..., M, K] (activations)"),
            _Param("B", "T2", "right operand [..., K, N] (weights)"),
            _Param("a_zero_point", "T1", "128 for uint8 A, 0 for int8 A (scalar or [M])", param_option=_Optional),
            _Param("b_zero_point", "T2", "0 (scalar or [N])", param_option=_Optional),
            _Param("LUT", "T3", _LUT_DOC),
            _Param("linear", "T4", _LINEAR_DOC.format(channels="N"), param_option=_Optional),
        ],
        outputs=[_Param("Y", "T3", "int32 [..., M, N], batch dims broadcast")],
        type_constraints=_INT_TYPES,
    )
    schema.set_type_and_shape_inference_function(defs.get_schema("MatMulInteger").get_type_and_shape_inference_function())
    return schema


def register_schemas() -> None:
    """Register every axmoe schema with onnx (once per process)."""
    for make in (_approx_mul_schema, _approx_conv_integer_schema, _approx_matmul_integer_schema):
        schema = make()
        if not defs.has(schema.name, schema.domain):
            defs.register_schema(schema)


def opset_imports(onnx_opset: int = 17) -> list[onnx.OperatorSetIdProto]:
    """Opset imports for a model that uses the standard domain and the axmoe domain."""
    return [onnx.helper.make_opsetid("", onnx_opset), onnx.helper.make_opsetid(DOMAIN, VERSION)]
