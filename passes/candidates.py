"""The uniform description of one approximable integer product: `IntegerOp`.

An approximable op is a Conv, Gemm or MatMul whose two operands are 8-bit integers: in QDQ
form (`DQ(x_q) -> Conv <- DQ(w_q)`, optionally `-> Q`), as QLinearConv / QLinearMatMul, or as
ConvInteger / MatMulInteger. Whatever the source form, the rule that recognises it
(`passes.rules`) describes it by one `IntegerOp`, which is all a lowering
(`passes.lowering`) reads:

    acc[n, m, ...] = sum_k a[n, k, ...] * w[k, m]           a = x_q - x_zero_point (signed 8-bit)
    y = requantize(acc + bias)                                (QDQ / QLinear forms)

The signed activation is `x_q - zp` for uint8 with zp 128 or int8 with zp 0 (`SIGNED_ZERO_POINTS`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx_ir as ir

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
