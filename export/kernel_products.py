"""Retraining products from axmoe's own C++ kernels: the forward pass in onnxruntime, the
backward pass in torch float32.

Drop-in twins of `multipliers.torch_kernels.conv_products` / `matmul_products` (same operands,
same results, CPU tensors only):

    conv:    acc[n, g*Mg + m, p] = sum_{c < Cg, r} LUT[a[n, g*Cg + c, p*s - pad + r*d] + 128, w[g*Mg + m, c, r] + 128]
    matmul:  acc[..., m] = sum_k LUT[a[..., k] + 128, w[k, m] + 128]

computed by one axmoe.ApproxConvInteger / ApproxMatMulInteger node (bit-exact with
`multipliers.oracle`; int8 dot products on masked operands when the LUT decomposes, the LUT
kernels otherwise), and returned as `exact_dtype(K, product_bound(mult))` floats holding the exact int32 values. The
backward pass is `multipliers.torch_kernels.conv_with_table_gradient` /
`matmul_with_table_gradient` with the tables of `gradient` ("ste" or "lut",
`multipliers.gradients`): one float convolution backward, as for the exact product.

Each distinct node (multiplier LUT, conv attributes, spatial rank, threads) gets one cached
onnxruntime session holding one op: activations int8 with zero point 0 (a in [-128, 127]),
weights an int8 input (they change every step, so the op's packed-weight cache stays off), the
LUT an initializer (its decomposition plan is built once per session), intra-op threads
`torch.get_num_threads()` that sleep rather than spin when idle. Batch and spatial sizes are
symbolic, so one session serves every batch.
"""

from __future__ import annotations

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper, numpy_helper

from modelfile.ops import APPROX_CONV_INTEGER, APPROX_MATMUL_INTEGER, DOMAIN, opset_imports
from multipliers.gradients import gradient_tables
from multipliers.lut import exact_lut
from multipliers.multiplier import Multiplier
from multipliers.torch_kernels import (ConvParams, conv_with_table_gradient, exact_dtype,
                                       matmul_with_table_gradient, product_bound)
from runtime.ort import session_options

_SESSIONS: dict[tuple, object] = {}
_IR_VERSION = 10  # onnxruntime refuses onnx's newest IR version (shared/facts/FIELD.md)


def _lut(mult: Multiplier | None) -> tuple[str, np.ndarray]:
    if mult is None or mult.is_exact:
        return "exact", exact_lut()
    return mult.sha256, mult.lut


def _model(node: onnx.NodeProto, x_rank: int, w_rank: int, lut: np.ndarray) -> bytes:
    x = helper.make_tensor_value_info("x", TensorProto.INT8, [f"x{i}" for i in range(x_rank)])
    w = helper.make_tensor_value_info("w", TensorProto.INT8, [f"w{i}" for i in range(w_rank)])
    y = helper.make_tensor_value_info("y", TensorProto.INT32, None)
    table = numpy_helper.from_array(np.ascontiguousarray(lut, dtype=np.int32), "lut")
    graph = helper.make_graph([node], "products", [x, w], [y], initializer=[table])
    return helper.make_model(graph, opset_imports=opset_imports(), ir_version=_IR_VERSION).SerializeToString()


def _session(key: tuple, build):
    threads = torch.get_num_threads()
    key = key + (threads,)
    sess = _SESSIONS.get(key)
    if sess is None:
        import onnxruntime as ort

        options = session_options(threads=threads)
        # Idle pool threads of the many per-node sessions would otherwise spin between calls and
        # take the cores from torch's backward pass.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        sess = _SESSIONS[key] = ort.InferenceSession(build(), sess_options=options, providers=["CPUExecutionProvider"])
    return sess


def _int8(name: str, x: torch.Tensor) -> np.ndarray:
    if x.device.type != "cpu":
        raise ValueError(f"kernel products run on CPU tensors; {name} is on {x.device} "
                         "(use multipliers.torch_kernels on other devices)")
    if x.numel():
        low, high = torch.aminmax(x.detach())
        if low < -128 or high > 127:
            raise ValueError(f"{name} must hold signed 8-bit values in [-128, 127], got [{low:g}, {high:g}]")
    return x.detach().to(torch.int8).contiguous().numpy()


def _conv_forward(a: torch.Tensor, w: torch.Tensor, p: ConvParams, mult: Multiplier | None) -> torch.Tensor:
    if p.spatial not in (1, 2) or a.ndim != p.spatial + 2 or w.ndim != p.spatial + 2:
        raise ValueError(f"kernel conv products take 1-D or 2-D convolutions: a {tuple(a.shape)}, "
                         f"w {tuple(w.shape)}, {p.spatial} spatial axes")
    x_np, w_np = _int8("a", a), _int8("w", w)
    lut_key, lut = _lut(mult)
    key = ("conv", lut_key, p.spatial, tuple(p.strides), tuple(p.pads), tuple(p.dilations), p.group)

    def build():
        node = helper.make_node(APPROX_CONV_INTEGER, ["x", "w", "", "", "lut"], ["y"], domain=DOMAIN,
                                strides=list(p.strides), pads=list(p.pads), dilations=list(p.dilations),
                                group=p.group)
        return _model(node, p.spatial + 2, p.spatial + 2, lut)

    (y,) = _session(key, build).run(None, {"x": x_np, "w": w_np})
    return torch.from_numpy(y)


def conv_products(a: torch.Tensor, w: torch.Tensor, params: ConvParams, mult: Multiplier | None, *,
                  gradient: str = "ste") -> torch.Tensor:
    """Integer accumulations of an (approximate) convolution, forward in the C++ kernels.

    Args:
        a: (N, C, L) or (N, C, H, W) activations, integer-valued floats in [-128, 127] (CPU).
        w: (M, C / group, kL) or (M, C / group, kH, kW) weights, integer-valued floats in [-128, 127].
        params: strides, pads (ONNX order: begins then ends), dilations, group.
        mult: the multiplier (None or exact: exact products).
        gradient: "ste" or "lut" (`multipliers.gradients`).
    Returns:
        (N, M, *OS) exact accumulations in `exact_dtype(K, product_bound(mult))`, K = C / group * prod(kernel).
    """
    tables = gradient_tables(mult, gradient)
    dtype = exact_dtype(int(np.prod(w.shape[1:])), product_bound(mult))
    return conv_with_table_gradient(lambda x, y: _conv_forward(x, y, params, mult).to(dtype),
                                    a.to(dtype), w.to(dtype), params, tables)


def _matmul_forward(a: torch.Tensor, w: torch.Tensor, mult: Multiplier | None) -> torch.Tensor:
    if w.ndim != 2 or a.ndim < 1 or a.shape[-1] != w.shape[0]:
        raise ValueError(f"kernel matmul products take a (..., K) @ w (K, M): got a {tuple(a.shape)}, "
                         f"w {tuple(w.shape)}")
    a_np, w_np = _int8("a", a), _int8("w", w)
    lut_key, lut = _lut(mult)

    def build():
        node = helper.make_node(APPROX_MATMUL_INTEGER, ["x", "w", "", "", "lut"], ["y"], domain=DOMAIN)
        return _model(node, a.ndim, 2, lut)

    (y,) = _session(("matmul", lut_key, a.ndim), build).run(None, {"x": a_np, "w": w_np})
    return torch.from_numpy(y)


def matmul_products(a: torch.Tensor, w: torch.Tensor, mult: Multiplier | None, *,
                    gradient: str = "ste") -> torch.Tensor:
    """Integer accumulations of an (approximate) a @ w, forward in the C++ kernels.

    Args:
        a: (..., K) activations, integer-valued floats in [-128, 127] (CPU); w: (K, M) weights.
        mult, gradient: as `conv_products`.
    Returns:
        (..., M) exact accumulations in `exact_dtype(K, product_bound(mult))`.
    """
    tables = gradient_tables(mult, gradient)
    dtype = exact_dtype(int(w.shape[0]), product_bound(mult))
    return matmul_with_table_gradient(lambda x, y: _matmul_forward(x, y, mult).to(dtype),
                                      a.to(dtype), w.to(dtype), tables)
