"""Step 2 of export: fp32 ONNX -> 8-bit QDQ ONNX with onnxruntime's static quantizer.

Scheme (../shared/DESIGN.md): symmetric; weights int8 per output channel in [-127, 127]
with zero point 0; activations per tensor, calibrated on real data, stored as uint8 with zero
point 128 (the same values as signed int8, a = q - 128, and the form onnxruntime's fast x86
kernels take); biases int32 at scale sx * sw. Q/DQ pairs sit around Conv, Gemm and MatMul.

    q = saturate(round_half_even(x / s) + zp)          x^ = (q - zp) * s
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import onnx
from onnx import numpy_helper

from export.fp32 import INPUT_NAME, IR_VERSION
from modelfile.naming import with_expert

CALIBRATION_METHODS = ("minmax", "percentile", "entropy")
QUANTIZED_OP_TYPES = ("Conv", "Gemm", "MatMul")
ACTIVATION_ZERO_POINT = 128
SCHEME = "symmetric-int8: weights int8 per-channel zp 0 [-127,127]; activations uint8 per-tensor zp 128; bias int32"


class QuantizationError(ValueError):
    pass


class _BatchReader:
    """onnxruntime CalibrationDataReader over float32 batches (N, C, H, W)."""

    def __init__(self, batches: Iterable[np.ndarray]):
        self._batches: Iterator[np.ndarray] = iter(batches)

    def get_next(self):
        batch = next(self._batches, None)
        return None if batch is None else {INPUT_NAME: np.ascontiguousarray(batch, dtype=np.float32)}

    def rewind(self):  # part of the reader protocol; calibration reads once
        pass


def quantize_model(fp32: onnx.ModelProto | str | Path, calibration: Iterable[np.ndarray],
                   method: str = "minmax", nodes_to_exclude: Iterable[str] = (),
                   scale_overrides: dict[str, float] | None = None) -> onnx.ModelProto:
    """Quantize an fp32 model with onnxruntime.quantization.quantize_static (QDQ format).

    Args:
        fp32: the fp32 model (from `export.fp32.export_fp32`).
        calibration: float32 input batches of real data.
        method: "minmax", "percentile" (99.999th) or "entropy".
        nodes_to_exclude: node names to keep in float (e.g. MoE routers).
        scale_overrides: tensor name -> activation scale to pin (zero point stays 128), so a
            retrained model is exported with the scales it was trained with.
    """
    from onnxruntime.quantization import (CalibrationMethod, QuantFormat, QuantType,
                                          quantize_static)

    if method not in CALIBRATION_METHODS:
        raise QuantizationError(f"unknown calibration method {method!r}; valid: {', '.join(CALIBRATION_METHODS)}")
    calib_method = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
                    "entropy": CalibrationMethod.Entropy}[method]
    extra = {"ActivationSymmetric": True, "WeightSymmetric": True, "CalibPercentile": 99.999}
    if scale_overrides:
        extra["TensorQuantOverrides"] = {
            name: [{"scale": np.float32(scale), "zero_point": np.uint8(ACTIVATION_ZERO_POINT)}]
            for name, scale in scale_overrides.items()}
    with tempfile.TemporaryDirectory(prefix="axmoe-quant-") as tmp:
        src = Path(tmp) / "fp32.onnx"
        dst = Path(tmp) / "int8.onnx"
        model = fp32 if isinstance(fp32, onnx.ModelProto) else onnx.load(str(fp32))
        onnx.save(model, str(src))
        quantize_static(str(src), str(dst), _BatchReader(calibration), quant_format=QuantFormat.QDQ,
                        op_types_to_quantize=list(QUANTIZED_OP_TYPES), per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        nodes_to_exclude=list(nodes_to_exclude), calibrate_method=calib_method,
                        extra_options=extra)
        quantized = onnx.load(str(dst))
    quantized.ir_version = IR_VERSION
    return quantized


def fix_uncalibrated(model: onnx.ModelProto) -> list[str]:
    """Give activations that calibration never reached the scheme's zero point.

    A tensor no calibration sample reached (an expert no calibration image was routed to)
    comes out of onnxruntime's calibrator with scale 1 and zero point 0. Its zero point is
    set to 128 and, where a sibling expert's tensor of the same name was calibrated, its
    scale is borrowed from there. Returns the names of the tensors that were fixed.
    """
    inits = {i.name: i for i in model.graph.initializer}
    fixed = []
    for name, init in inits.items():
        if not name.endswith("_zero_point"):
            continue
        zp = numpy_helper.to_array(init)
        scale_name = name.removesuffix("_zero_point") + "_scale"
        if zp.dtype != np.uint8 or zp.size != 1 or scale_name not in inits:
            continue
        if int(zp) == ACTIVATION_ZERO_POINT:
            continue
        scale = numpy_helper.to_array(inits[scale_name])
        if not (int(zp) == 0 and float(scale) == 1.0):
            raise QuantizationError(f"{name}: activation zero point {int(zp)} (expected {ACTIVATION_ZERO_POINT})")
        init.CopyFrom(numpy_helper.from_array(np.array(ACTIVATION_ZERO_POINT, np.uint8), name))
        for sibling in sorted({with_expert(scale_name, e) for e in range(64)} - {scale_name}):
            other = inits.get(sibling)
            if other is not None and float(numpy_helper.to_array(other)) != 1.0:
                inits[scale_name].CopyFrom(numpy_helper.from_array(numpy_helper.to_array(other), scale_name))
                break
        fixed.append(name.removesuffix("_zero_point"))
    _requantize_biases(model, {f + "_scale" for f in fixed})
    return fixed


def _requantize_biases(model: onnx.ModelProto, activation_scales: set[str]) -> None:
    """Bring the int32 bias of every Conv/Gemm whose activation scale `fix_uncalibrated`
    changed back to scale s_x * s_w. onnxruntime's quantizer wrote it at the placeholder
    s_x = 1 (scale s_w), so a QDQ fusion (QLinearConv: bias at s_x * s_w) does not apply and
    the deployed integer graph would differ from the one the scheme describes:
        b' = round(b * s_b / (s_x * s_w)),  s_b' = s_x * s_w  (per output channel)."""
    if not activation_scales:
        return
    inits = {i.name: i for i in model.graph.initializer}
    dq = {n.output[0]: n for n in model.graph.node if n.op_type == "DequantizeLinear"}
    for node in model.graph.node:
        if node.op_type not in ("Conv", "Gemm") or len(node.input) < 3:
            continue
        x, w, b = (dq.get(name) for name in node.input[:3])
        if x is None or w is None or b is None or x.input[1] not in activation_scales:
            continue
        if b.input[0] not in inits or b.input[1] not in inits or w.input[1] not in inits:
            continue
        bias = numpy_helper.to_array(inits[b.input[0]])
        if bias.dtype != np.int32:
            continue
        old = numpy_helper.to_array(inits[b.input[1]]).astype(np.float64)
        new = (numpy_helper.to_array(inits[x.input[1]]).astype(np.float32)
               * numpy_helper.to_array(inits[w.input[1]]).astype(np.float32))
        ints = np.clip(np.round(bias * old / new.astype(np.float64)), np.iinfo(np.int32).min, np.iinfo(np.int32).max)
        inits[b.input[0]].CopyFrom(numpy_helper.from_array(ints.astype(np.int32), b.input[0]))
        inits[b.input[1]].CopyFrom(numpy_helper.from_array(new.astype(np.float32).reshape(old.shape), b.input[1]))


# ------------------------------------------------------------------------------ checking
@dataclass(frozen=True)
class QuantizedOp:
    """A Conv/Gemm/MatMul whose activation and weight inputs come from DequantizeLinear."""

    node: str  # node name
    op_type: str
    activation_zero_point: int
    activation_dtype: str  # "uint8" | "int8"
    weight_zero_points: tuple[int, ...]
    weight_dtype: str
    weight_is_constant: bool


def _producers(model: onnx.ModelProto) -> dict[str, onnx.NodeProto]:
    return {out: node for node in model.graph.node for out in node.output}


def quantized_ops(model: onnx.ModelProto) -> list[QuantizedOp]:
    """Every approximable op of a QDQ model with its operands' zero points and dtypes."""
    inits = {i.name: i for i in model.graph.initializer}
    producers = _producers(model)
    out = []

    def dq_info(name):
        node = producers.get(name)
        if node is None or node.op_type != "DequantizeLinear":
            return None
        zp = inits.get(node.input[2]) if len(node.input) > 2 else None
        zp_values = numpy_helper.to_array(zp).ravel() if zp is not None else np.zeros(1, np.uint8)
        return zp_values, zp_values.dtype.name, node.input[0] in inits

    for node in model.graph.node:
        if node.op_type not in QUANTIZED_OP_TYPES:
            continue
        a, w = dq_info(node.input[0]), dq_info(node.input[1])
        if a is None or w is None:
            continue
        out.append(QuantizedOp(node.name, node.op_type, int(a[0][0]), a[1],
                               tuple(int(v) for v in w[0]), w[1], w[2]))
    return out


def check_scheme(model: onnx.ModelProto) -> list[str]:
    """Violations of the axmoe scheme among the quantized ops (empty when the model obeys it)."""
    problems = []
    for op in quantized_ops(model):
        if not (op.activation_dtype == "uint8" and op.activation_zero_point == ACTIVATION_ZERO_POINT
                or op.activation_dtype == "int8" and op.activation_zero_point == 0):
            problems.append(f"{op.node}: activation {op.activation_dtype} zero point {op.activation_zero_point}")
        if op.weight_is_constant and (op.weight_dtype != "int8" or any(op.weight_zero_points)):
            problems.append(f"{op.node}: weight {op.weight_dtype} zero points {set(op.weight_zero_points)}")
    inits = {i.name: i for i in model.graph.initializer}
    producers = _producers(model)

    def scale_of(name):
        dq = producers.get(name)
        if dq is None or dq.op_type != "DequantizeLinear" or dq.input[1] not in inits:
            return None
        return numpy_helper.to_array(inits[dq.input[1]]).astype(np.float32).ravel()

    for node in model.graph.node:
        if node.op_type not in ("Conv", "Gemm") or len(node.input) < 3:
            continue
        sx, sw, sb = (scale_of(name) for name in node.input[:3])
        if sx is not None and sw is not None and sb is not None and not np.allclose(
                *np.broadcast_arrays(sb, sx * sw), rtol=1e-6, atol=0.0):
            problems.append(f"{node.name}: int32 bias not at scale s_x * s_w")
    return problems
