"""ONNX schemas of the axmoe custom-op domain, so `onnx.checker` and shape inference accept
models that use them. Call `register_schemas()` (idempotent) before checking a model.

    axmoe.ApproxMul(A: int8[*], B: int8[*], LUT: int32[256, 256]) -> Y: int32[*]
        Y[i] = LUT[A[i] + 128, B[i] + 128]           (A and B have the same shape)
"""

from __future__ import annotations

import onnx
from onnx import defs

DOMAIN = "axmoe"
VERSION = 1


def _approx_mul_schema() -> defs.OpSchema:
    schema = defs.OpSchema(
        "ApproxMul", DOMAIN, VERSION,
        doc="Elementwise approximate product through a multiplier LUT: "
            "Y[i] = LUT[A[i] + 128, B[i] + 128].",
        inputs=[
            defs.OpSchema.FormalParameter("A", "tensor(int8)", "first operands"),
            defs.OpSchema.FormalParameter("B", "tensor(int8)", "second operands, same shape as A"),
            defs.OpSchema.FormalParameter("LUT", "tensor(int32)", "table, shape (256, 256)"),
        ],
        outputs=[defs.OpSchema.FormalParameter("Y", "tensor(int32)", "products, shape of A")],
    )
    return schema


def register_schemas() -> None:
    """Register every axmoe schema with onnx (once per process)."""
    for schema in (_approx_mul_schema(),):
        if not defs.has(schema.name, schema.domain):
            defs.register_schema(schema)


def opset_imports(onnx_opset: int = 17) -> list[onnx.OperatorSetIdProto]:
    """Opset imports for a model that uses the standard domain and the axmoe domain."""
    return [onnx.helper.make_opsetid("", onnx_opset), onnx.helper.make_opsetid(DOMAIN, VERSION)]
