"""Fixed-scale quantization of float weights into an existing 8-bit QDQ model.

Approximate-aware retraining keeps every scale of the deployed model and trains the float
weights behind its quantized initializers; this module writes them back with those scales,
exactly as the emulation (`export.emulation`) quantizes them in its forward pass:

    weight  W_q = clamp(round_half_even(W / s_w[c]), -127, 127)      int8, per output channel
    bias    b_q = round_half_even(b / (s_x * s_w[c]))                 int32 (stored bias scale)

Float initializers (the router weights the exporter keeps in float) are written back as they
are: `float_initializers` maps them to the float state dict (the initializer is a parameter
or its transpose, as the exporter lays a Linear out for MatMul), `write_floats` stores them.

`quantization_state` / `apply_quantization_state` carry every scale and zero point of a
model, so a retrained checkpoint re-exported by `python -m export.to_onnx` reproduces the
retrained int8 model bit for bit.
"""

from __future__ import annotations

from typing import Iterable, Mapping

import numpy as np
import onnx
from onnx import numpy_helper

from export.fp32 import module_path_of

_FLOAT_TYPES = (onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE, onnx.TensorProto.FLOAT16)


def _axis_shape(node: onnx.NodeProto, scale: np.ndarray, ndim: int) -> tuple[int, ...]:
    if scale.size == 1:
        return ()
    axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
    shape = [1] * ndim
    shape[axis] = -1
    return tuple(shape)


def quantize_with_scale(values: np.ndarray, scale: np.ndarray, dtype: np.dtype, shape: tuple) -> np.ndarray:
    q = np.round(values.astype(np.float32) / scale.astype(np.float32).reshape(shape or ()))
    if np.dtype(dtype) == np.int8:
        return np.clip(q, -127, 127).astype(np.int8)
    return q.astype(np.int64).clip(np.iinfo(np.int32).min, np.iinfo(np.int32).max).astype(np.int32)


def write_weights(model: onnx.ModelProto, float_weights: Mapping[str, np.ndarray]) -> list[str]:
    """Requantize, in place, every `<name>_quantized` initializer whose float `name` is given.

    Returns the names written.
    """
    inits = {i.name: i for i in model.graph.initializer}
    written = []
    for node in model.graph.node:
        if node.op_type != "DequantizeLinear" or node.input[0] not in inits:
            continue
        qname = node.input[0]
        fname = qname.removesuffix("_quantized")
        if fname == qname or fname not in float_weights:
            continue
        stored = numpy_helper.to_array(inits[qname])
        scale = numpy_helper.to_array(inits[node.input[1]])
        values = np.asarray(float_weights[fname], dtype=np.float32)
        if values.shape != stored.shape:
            raise ValueError(f"{fname}: shape {values.shape} does not match the model's {stored.shape}")
        ints = quantize_with_scale(values, scale, stored.dtype, _axis_shape(node, scale, stored.ndim))
        inits[qname].CopyFrom(numpy_helper.from_array(ints, qname))
        written.append(fname)
    return written


def quantization_state(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    """Every scale and zero-point initializer of a QDQ model, by name."""
    names = set()
    for node in model.graph.node:
        if node.op_type in ("QuantizeLinear", "DequantizeLinear"):
            names.update(node.input[1:3])
    return {i.name: numpy_helper.to_array(i).copy() for i in model.graph.initializer if i.name in names}


def apply_quantization_state(model: onnx.ModelProto, state: Mapping[str, np.ndarray],
                             float_weights: Mapping[str, np.ndarray]) -> None:
    """Pin every scale / zero point to `state` (same names) and requantize the weights."""
    inits = {i.name: i for i in model.graph.initializer}
    missing = [name for name in state if name not in inits]
    if missing:
        raise ValueError(f"quantization state does not fit this model (no {missing[0]!r})")
    for name, value in state.items():
        inits[name].CopyFrom(numpy_helper.from_array(np.asarray(value), name))
    write_weights(model, float_weights)


def float_initializers(model: onnx.ModelProto, node_names: Iterable[str],
                       parameters: Mapping[str, np.ndarray]) -> dict[str, tuple[str, bool]]:
    """Float initializers read by `node_names` that hold a parameter of the node's module.

    A node named with module scope `path` (`export.fp32.module_path_of`) reads a float initializer
    I; I belongs to parameter `path.<p>` of `parameters` when I == P or I == P^T bit for bit
    (the exporter writes Linear weights transposed for MatMul, under a generated name).

    Returns:
        initializer name -> (parameter name, transposed).
    """
    inits = {i.name: i for i in model.graph.initializer}
    wanted = set(node_names)
    out: dict[str, tuple[str, bool]] = {}
    for node in model.graph.node:
        if node.name not in wanted:
            continue
        path = module_path_of(node.name)
        for name in node.input:
            if name not in inits or name in out or inits[name].data_type not in _FLOAT_TYPES:
                continue
            value = numpy_helper.to_array(inits[name])
            for pname, p in parameters.items():
                if pname.rpartition(".")[0] != path:
                    continue
                p = np.asarray(p)
                if p.shape == value.shape and np.array_equal(p, value):
                    out[name] = (pname, False)
                elif p.ndim == 2 and p.T.shape == value.shape and np.array_equal(p.T, value):
                    out[name] = (pname, True)
    return out


def write_floats(model: onnx.ModelProto, values: Mapping[str, np.ndarray]) -> list[str]:
    """Replace, in place, the float initializers named in `values` (same shape and dtype)."""
    inits = {i.name: i for i in model.graph.initializer}
    for name, value in values.items():
        if name not in inits:
            raise ValueError(f"the model has no initializer {name!r}")
        stored = numpy_helper.to_array(inits[name])
        value = np.asarray(value, dtype=stored.dtype)
        if value.shape != stored.shape:
            raise ValueError(f"{name}: shape {value.shape} does not match the model's {stored.shape}")
        inits[name].CopyFrom(numpy_helper.from_array(value, name))
    return list(values)
