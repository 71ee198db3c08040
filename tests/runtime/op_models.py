"""Model builders and runners for the axmoe integer ops, shared by the runtime tests.

Every operand is a graph input (so one model serves any LUT and data), unless a test asks
for initializers to exercise the constant-LUT / constant-weight caches of the kernels.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from onnx import TensorProto, helper, numpy_helper

import multipliers
import runtime.ort
from modelfile.ops import DOMAIN, opset_imports

#: LUTs the differential tests draw from: catalog multipliers of each kind (exact, partial
#: product with 2-4 correction terms, operand masks incl. an activation-only mask), the
#: non-decomposable Mitchell and DRUM, and a table with no structure at all.
LUT_NAMES = ["mul8s_1KV6", "mul8s_1KV8", "mul8s_1KVA", "mul8s_1KVP", "mul8s_1KX5", "mul8s_1L2L", "mul8s_1L12",
             "mitchell", "drum:4", "random"]


def lut(name: str) -> np.ndarray:
    if name == "random":
        return np.random.default_rng(7).integers(-32768, 32768, (256, 256)).astype(np.int32)
    return multipliers.get(name).lut


_ONNX_TYPE = {np.dtype(np.uint8): TensorProto.UINT8, np.dtype(np.int8): TensorProto.INT8,
              np.dtype(np.int32): TensorProto.INT32, np.dtype(np.float32): TensorProto.FLOAT}


def _model(op: str, names: Sequence[str], feeds: dict, initializers: dict, attrs: dict) -> bytes:
    inputs = [helper.make_tensor_value_info(n, _ONNX_TYPE[np.asarray(v).dtype], np.asarray(v).shape)
              for n, v in feeds.items() if n not in initializers]
    inits = [numpy_helper.from_array(np.asarray(v), n) for n, v in initializers.items()]
    node = helper.make_node(op, list(names), ["y"], domain=DOMAIN, **attrs)
    graph = helper.make_graph([node], op, inputs, [helper.make_tensor_value_info("y", TensorProto.INT32, None)], inits)
    return helper.make_model(graph, opset_imports=opset_imports(), ir_version=10).SerializeToString()


def integer_op_model(op: str, x: np.ndarray, w: np.ndarray, x_zp=None, w_zp=None, *, constant=(),
                     **attrs) -> tuple[bytes, dict]:
    """(model bytes, feeds without the LUT) for op in {ApproxConvInteger, ApproxMatMulInteger};
    x_zp / w_zp None leave the zero point out (empty input name). attrs["lut"], if given,
    fixes the LUT input's declared dtype and shape (default int32 [256, 256]) and is its
    value when `constant` (names of inputs stored as initializers: "w", "lut") holds it."""
    table = attrs.pop("lut", None)
    feeds = {"x": x, "w": w}
    names = ["x", "w", "", "", "lut"]
    if x_zp is not None:
        feeds["x_zp"] = np.asarray(x_zp, dtype=x.dtype)
        names[2] = "x_zp"
    if w_zp is not None:
        feeds["w_zp"] = np.asarray(w_zp, dtype=np.int8)
        names[3] = "w_zp"
    feeds["lut"] = table if table is not None else np.zeros((256, 256), np.int32)
    initializers = {n: feeds[n] for n in constant}
    model = _model(op, names, feeds, initializers, attrs)
    return model, {n: v for n, v in feeds.items() if n not in initializers and n != "lut"}


def sessions(model: bytes, threads: int = 2) -> dict:
    """One session per (kernel ISA usable here, path): the variants every differential test covers."""
    return {(isa, path): runtime.ort.session(model, threads=threads, kernel=runtime.ort.KernelConfig(isa, path))
            for isa in runtime.ort.kernel_variants() for path in ("auto", "lut")}


def signed(x: np.ndarray, x_zp) -> np.ndarray:
    """Signed operands a = x - zero point, as int64, for the oracle."""
    return x.astype(np.int64) - (0 if x_zp is None else int(np.asarray(x_zp).ravel()[0]))


def auto_pads(size: Sequence[int], kernel_shape: Sequence[int], strides, dilations, auto_pad: str) -> list[int]:
    """Explicit [begin..., end...] pads of an ONNX auto_pad setting."""
    begin, end = [], []
    for n, k, s, d in zip(size, kernel_shape, strides, dilations):
        if auto_pad == "VALID":
            begin.append(0), end.append(0)
            continue
        total = max(0, (-(-n // s) - 1) * s + d * (k - 1) + 1 - n)
        lo = total // 2 if auto_pad == "SAME_UPPER" else total - total // 2
        begin.append(lo), end.append(total - lo)
    return begin + end
