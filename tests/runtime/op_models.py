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
              np.dtype(np.int32): TensorProto.INT32, np.dtype(np.float32): TensorProto.FLOAT,
              np.dtype(np.int64): TensorProto.INT64}


def _model(op: str, names: Sequence[str], feeds: dict, initializers: dict, attrs: dict) -> bytes:
    inputs = [helper.make_tensor_value_info(n, _ONNX_TYPE[np.asarray(v).dtype], np.asarray(v).shape)
              for n, v in feeds.items() if n not in initializers]
    inits = [numpy_helper.from_array(np.asarray(v), n) for n, v in initializers.items()]
    node = helper.make_node(op, list(names), ["y"], domain=DOMAIN, **attrs)
    graph = helper.make_graph([node], op, inputs, [helper.make_tensor_value_info("y", TensorProto.INT32, None)], inits)
    return helper.make_model(graph, opset_imports=opset_imports(), ir_version=10).SerializeToString()


def integer_op_model(op: str, x: np.ndarray, w: np.ndarray, x_zp=None, w_zp=None, *, constant=(), linear=None,
                     **attrs) -> tuple[bytes, dict]:
    """(model bytes, feeds without the LUT) for op in {ApproxConvInteger, ApproxMatMulInteger};
    x_zp / w_zp None leave the zero point out (empty input name). attrs["lut"], if given,
    fixes the LUT input's declared dtype and shape (default int32 [256, 256]) and is its
    value when `constant` (names of inputs stored as initializers: "w", "lut", "linear") holds it.
    linear: the optional 6th input (int64 [M], the linear compensation coefficients)."""
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
    if linear is not None:
        feeds["linear"] = np.asarray(linear, np.int64)
        names.append("linear")
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


#: LUT whose "product" is the activation itself, lut[a + 128, b + 128] = a: a conv or matmul
#: with all-ones weights through it sums the activations of each receptive field (S).
ACTIVATION_LUT = np.repeat(np.arange(-128, 128, dtype=np.int32)[:, None], 256, axis=1)


def linear_term(s: np.ndarray, g: np.ndarray, axis: int, fraction_bits: int = 16) -> np.ndarray:
    """t = floor((g * S + 2^(F-1)) / 2^F) in int64 (modelfile.ops.LINEAR_FRACTION_BITS), g along `axis` of S."""
    shape = [1] * s.ndim
    shape[axis] = -1
    product = s.astype(np.int64) * np.asarray(g, np.int64).reshape(shape) + (1 << (fraction_bits - 1))
    return np.floor_divide(product, 1 << fraction_bits)


def linear_reference(a: np.ndarray, w_shape, g: np.ndarray, *, kind: str, strides=None, pads=None, dilations=None,
                     group: int = 1) -> np.ndarray:
    """int64 linear term of every output of a conv (w_shape [M, C/G, k...]) or matmul
    (w_shape [K, N]) of signed activations `a`: S from the oracle on all-ones weights
    through ACTIVATION_LUT (one S per group, repeated over the group's M/G outputs)."""
    from multipliers.oracle import lut_conv, lut_matmul

    if kind == "matmul":
        s = lut_matmul(a, np.ones((w_shape[0], 1), np.int8), ACTIVATION_LUT).astype(np.int64)  # [..., 1]
        return linear_term(np.broadcast_to(s, (*s.shape[:-1], w_shape[1])), g, axis=-1)
    m = w_shape[0]
    ones = np.ones((group, *w_shape[1:]), np.int8)
    s = lut_conv(a, ones, ACTIVATION_LUT, strides=strides, pads=pads, dilations=dilations, group=group)
    s = np.repeat(s.astype(np.int64), m // group, axis=1)
    return linear_term(s, g, axis=1)
