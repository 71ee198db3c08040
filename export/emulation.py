"""PyTorch emulation of an 8-bit QDQ ONNX model, with onnxruntime's integer semantics.

The emulation executes the quantized graph itself, node by node, with torch ops, so it
quantizes exactly where the deployed model does (whatever the architecture, MoE dispatch
included) with the identical scales:

    Q:   q = clamp(round_half_even(x / s) + zp, qmin, qmax)       DQ:  x^ = (q - zp) * s
    Conv / Gemm / MatMul on DQ operands: acc = sum_k mul(a_int, w_int) (+ b_int), exact integers
      followed by Q:      q = clamp(round_half_even(float32(acc) * (sa * sw / sy)) + zp)
      otherwise:          y = float32(acc) * (sa * sw)

the requantization of onnxruntime's fused QLinearConv / QLinearMatMul (and of the pass's
lowerings), so CNN outputs are identical to onnxruntime's. `mul` is the exact product, or,
per node, an approximate multiplier (`multipliers=`): torch kernels
(`multipliers.torch_kernels`: decomposition or LUT gather) or the numpy oracle
(`backend="oracle"`), which is how the pass's rewritten graphs are checked and retrained.

Weights and biases are trainable: given the float weights (the fp32 model's initializers,
whose names are the PyTorch parameter names), each weight DequantizeLinear becomes
fake-quantization `clamp(round(w / s_c), -127, 127)` of an nn.Parameter with the model's
fixed per-channel scale, and each bias `round(b / (sa * sw))`, with straight-through
gradients; activation Q nodes use the clipped straight-through estimator. With the
parameters untouched, the integers are those stored in the model.

Router weights (the exporter keeps every `models.gating.Router` in float, so they are float
initializers) are trainable too when named in `trainable_floats`, and `taps` records chosen
intermediate tensors of each forward (`tapped`), e.g. a router's logits for its balancing loss.

A node may carry a linear compensation term (`linear_terms`, node -> g int64 [M]), added to its
int32 accumulator after the products as every backend does (`modelfile.ops.LINEAR_FRACTION_BITS`):

    acc[n, o, p] += floor((g_o * S[n, o, p] + 2^(F-1)) / 2^F)         int64
    S[n, o, p] = sum of a over the receptive field of (n, o, p)       (conv with a ones kernel
                 [G, C/G, *k], groups G, repeated to each group's M/G outputs; padding adds 0)
    S[..., m]  = sum_k a[..., m, k]                                    (MatMul / Gemm)

The term is a constant of the backward pass.

Written by hand because no converter gives both integer-exact QDQ semantics and
trainable, straight-through fake-quant parameters (onnx2torch-style converters run
Q/DQ as float ops).
"""

from __future__ import annotations

import functools

from typing import Callable, Iterable, Mapping

import numpy as np
import onnx
import torch
from onnx import helper, numpy_helper
from torch import nn
from torch.nn import functional as F

from modelfile.ops import LINEAR_FRACTION_BITS
from multipliers import oracle, torch_kernels
from multipliers.gradients import GRADIENTS
from multipliers.multiplier import Multiplier
from multipliers.torch_kernels import ConvParams, exact_dtype, quantize_ste

METHODS = ("auto", "decomposed", "lut", "kernel")  # "kernel": export.kernel_products

_ONNX_TO_TORCH = {
    onnx.TensorProto.FLOAT: torch.float32, onnx.TensorProto.DOUBLE: torch.float64,
    onnx.TensorProto.INT64: torch.int64, onnx.TensorProto.INT32: torch.int32,
    onnx.TensorProto.INT8: torch.int8, onnx.TensorProto.UINT8: torch.uint8,
    onnx.TensorProto.BOOL: torch.bool, onnx.TensorProto.FLOAT16: torch.float16,
}


class UnsupportedGraphError(ValueError):
    pass


def round_ste(x: torch.Tensor) -> torch.Tensor:
    """round-half-even in the forward pass, identity gradient."""
    return x + (torch.round(x) - x).detach()


class QTensor:
    """Integer view of a DequantizeLinear output: value == ints * scale (zero point removed)."""

    __slots__ = ("ints", "scale")

    def __init__(self, ints: torch.Tensor, scale: torch.Tensor):
        self.ints = ints  # float tensor holding exact integers
        self.scale = scale  # broadcastable to ints


def _attrs(node: onnx.NodeProto) -> dict:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _param_key(name: str) -> str:
    return name.replace(".", "__")


class QDQEmulation(nn.Module):
    """Run a QDQ model in PyTorch; weights trainable when float weights are given.

    Args:
        model: the 8-bit QDQ model (from `export.quantize.quantize_model`).
        float_weights: initializer name -> float array for weights/biases to make trainable
            (normally the fp32 model's initializers; missing ones stay fixed integers).
        multipliers: node name -> multiplier of its products (exact ones are dropped).
        backend: "torch", or "oracle" (numpy reference kernels of `multipliers.oracle`, no gradients).
        method: products: "decomposed" | "lut" (`multipliers.torch_kernels`), "kernel" (axmoe's
            C++ kernels, `export.kernel_products`, CPU), or "auto": the kernels on CPU for
            correction-term and LUT-only multipliers, torch otherwise (`_kernel`).
        gradient: estimator of the approximate products' backward pass, "ste" | "lut",
            handed to the product functions.
        trainable_floats: float initializer name -> its value (same shape), made an
            nn.Parameter (router weights); `float_value(name)` reads it.
        taps: tensor names whose float values each forward records in `tapped`.
        linear_terms: node name -> int64 g [M], the linear compensation term (module docstring).
    """

    def __init__(self, model: onnx.ModelProto, float_weights: dict[str, np.ndarray] | None = None,
                 multipliers: Mapping[str, Multiplier] | None = None, backend: str = "torch",
                 method: str = "auto", *, gradient: str = "ste",
                 trainable_floats: Mapping[str, np.ndarray] | None = None, taps: Iterable[str] = (),
                 linear_terms: Mapping[str, np.ndarray] | None = None):
        super().__init__()
        if backend not in ("torch", "oracle"):
            raise ValueError(f"backend must be 'torch' or 'oracle', got {backend!r}")
        if method not in METHODS:
            raise ValueError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
        if gradient not in GRADIENTS:
            raise ValueError(f"gradient must be one of {', '.join(GRADIENTS)}, got {gradient!r}")
        self.multipliers = {k: v for k, v in (multipliers or {}).items() if not v.is_exact}
        self.backend = backend
        self.method = method
        self.gradient = gradient
        self.graph = model.graph
        self.input_names = [i.name for i in model.graph.input]
        self.output_names = [o.name for o in model.graph.output]
        inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
        self.params = nn.ParameterDict()
        self._float_name: dict[str, str] = {}  # quantized initializer -> trainable float name
        float_weights = float_weights or {}
        for node in model.graph.node:
            if node.op_type == "DequantizeLinear" and node.input[0] in inits:
                qname = node.input[0]
                fname = qname.removesuffix("_quantized")
                if fname in float_weights and fname != qname:
                    self.params[_param_key(fname)] = nn.Parameter(
                        torch.tensor(np.asarray(float_weights[fname], dtype=np.float32)))
                    self._float_name[qname] = fname
        self.floats = nn.ParameterDict()  # trainable float initializers (router weights)
        for name, value in (trainable_floats or {}).items():
            if name not in inits or not np.issubdtype(inits[name].dtype, np.floating):
                raise ValueError(f"{name!r} is not a float initializer of the model")
            value = np.asarray(value, dtype=inits[name].dtype)
            if value.shape != inits[name].shape:
                raise ValueError(f"{name}: shape {value.shape} does not match the model's {inits[name].shape}")
            self.floats[_param_key(name)] = nn.Parameter(torch.tensor(value))
        self._trainable_floats = [name for name in (trainable_floats or {})]
        for name, value in inits.items():
            if name not in self._trainable_floats:
                self.register_buffer(_param_key("c_" + name), torch.from_numpy(np.array(value)), persistent=False)
        self._const_names = set(inits) - set(self._trainable_floats)
        produced = {o for n in model.graph.node for o in n.output} | set(self.input_names)
        self.taps = tuple(taps)
        missing = [t for t in self.taps if t not in produced]
        if missing:
            raise ValueError(f"no tensor {missing[0]!r} to tap in the model")
        self.tapped: dict[str, torch.Tensor] = {}
        self._linear: dict[str, torch.Tensor] = {}
        nodes = {n.name: n for n in model.graph.node}
        for name, g in (linear_terms or {}).items():
            if name not in nodes or nodes[name].op_type not in ("Conv", "MatMul", "Gemm"):
                raise ValueError(f"linear term for {name!r}: no Conv/MatMul/Gemm node of that name")
            g = np.asarray(g)
            if g.ndim != 1 or not np.issubdtype(g.dtype, np.integer):
                raise ValueError(f"linear term for {name!r} must be an integer vector [M], got {g.dtype} {g.shape}")
            self._linear[name] = torch.from_numpy(g.astype(np.int64))
        unknown = {n.op_type for n in model.graph.node if n.op_type not in _OPS} - {"Constant"}
        if unknown:
            raise UnsupportedGraphError(f"emulation does not support op(s): {', '.join(sorted(unknown))}")

    def const(self, name: str) -> torch.Tensor:
        return getattr(self, _param_key("c_" + name))

    def float_weight(self, name: str) -> nn.Parameter:
        return self.params[_param_key(name)]

    def float_value(self, name: str) -> nn.Parameter:
        """The trainable float initializer `name` (one of `trainable_floats`)."""
        return self.floats[_param_key(name)]

    def trainable_names(self) -> list[str]:
        return list(self._float_name.values())

    def trainable_float_names(self) -> list[str]:
        return list(self._trainable_floats)

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        env: dict[str, object] = dict(zip(self.input_names, inputs))
        taps = set(self.taps)
        self.tapped = {}
        for node in self.graph.node:
            if node.op_type == "Constant":
                env[node.output[0]] = torch.from_numpy(np.array(numpy_helper.to_array(_attrs(node)["value"]))).to(
                    inputs[0].device)
                continue
            args = [self._value(env, name) if name else None for name in node.input]
            outs = _OPS[node.op_type](self, node, args, _attrs(node))
            for name, value in zip(node.output, outs if isinstance(outs, (list, tuple)) else (outs,)):
                env[name] = value
                if name in taps:
                    self.tapped[name] = self._float(value)
        for name in taps & set(self.input_names):
            self.tapped[name] = inputs[self.input_names.index(name)]
        results = [self._float(env[name]) for name in self.output_names]
        return results[0] if len(results) == 1 else tuple(results)

    def _value(self, env, name):
        if name in env:
            return env[name]
        if name in self._const_names:
            return self.const(name)
        if name in self._trainable_floats:
            return self.float_value(name)
        raise UnsupportedGraphError(f"tensor {name!r} is used before it is produced")

    @staticmethod
    def _float(value):
        if isinstance(value, QTensor):
            return value.ints * value.scale
        if isinstance(value, Accumulator):
            return value.acc.to(torch.float32) * value.scale
        return value

    # ------------------------------------------------------------------ integer products
    def conv_products(self, name: str, a: torch.Tensor, w: torch.Tensor, params: ConvParams) -> torch.Tensor:
        mult = self.multipliers.get(name)
        if self.backend == "oracle" and mult is not None:
            out = oracle.lut_conv(a.detach().cpu().numpy().astype(np.int64), w.detach().cpu().numpy().astype(np.int64),
                                  mult.lut, strides=params.strides, pads=params.pads,
                                  dilations=params.dilations, group=params.group)
            acc = torch.from_numpy(out.astype(np.float64)).to(a.device)
        elif self._kernel(mult, a):
            from export import kernel_products

            acc = kernel_products.conv_products(a, w, params, mult, gradient=self.gradient)
        else:
            acc = torch_kernels.conv_products(a, w, params, mult, method=self.method, gradient=self.gradient)
        if name in self._linear:
            acc = acc.to(torch.float64) + _conv_linear_term(a, w.shape, params, self._linear[name])
        return acc

    def matmul_products(self, name: str, a: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        mult = self.multipliers.get(name)
        if self.backend == "oracle" and mult is not None:
            out = oracle.lut_matmul(a.detach().cpu().numpy().astype(np.int64),
                                    w.detach().cpu().numpy().astype(np.int64),
                                    mult.lut)
            acc = torch.from_numpy(out.astype(np.float64)).to(a.device)
        elif self._kernel(mult, a):
            from export import kernel_products

            acc = kernel_products.matmul_products(a, w, mult, gradient=self.gradient)
        else:
            acc = torch_kernels.matmul_products(a, w, mult, method=self.method, gradient=self.gradient)
        return self.add_linear_term(name, a, acc)

    def _kernel(self, mult: Multiplier | None, a: torch.Tensor) -> bool:
        """Whether the products come from axmoe's C++ kernels (`export.kernel_products`): always
        with method "kernel"; with "auto" on CPU for the multipliers where they are the faster
        path (benchmarks/retrain_step.py, 1 thread: correction terms 1KVA 1.78x the plain fp32
        step vs 2.92x decomposed in torch, LUT-only tables 2.7x vs ~100x for the torch gather),
        while exact products and single-term mask forms stay in torch (1L2L 1.82x vs 2.02x)."""
        if self.method == "kernel":
            return True
        if self.method != "auto" or a.device.type != "cpu" or mult is None or mult.is_exact:
            return False
        dec = mult.decomposition
        return (not dec.exact or dec.num_terms > 1) and _kernels_available()

    def add_linear_term(self, name: str, a: torch.Tensor, acc: torch.Tensor) -> torch.Tensor:
        """acc (..., M) of a MatMul/Gemm plus its linear term of the rows of a (..., K), if any."""
        if name not in self._linear:
            return acc
        return acc.to(torch.float64) + _matmul_linear_term(a, self._linear[name])

    # --------------------------------------------------------------------- quantization
    def dequantize(self, node, args, attrs):
        x, scale = args[0], args[1].float()
        zp = args[2] if len(args) > 2 and args[2] is not None else torch.zeros((), dtype=torch.int64)
        axis = attrs.get("axis", 1)
        qname = node.input[0]
        if scale.ndim == 1 and scale.numel() > 1 or (scale.ndim == 1 and x.ndim > 1):
            shape = [1] * x.ndim
            shape[axis] = -1
            scale, zp = scale.reshape(shape), zp.reshape(shape)
        if qname in self._float_name:  # trainable weight or bias
            w = self.float_weight(self._float_name[qname])
            if x.dtype == torch.int32:  # bias, scale sa * sw
                ints = round_ste(w / scale)
            else:
                info = torch.iinfo(x.dtype)
                ints = quantize_ste(w / scale, -info.max, info.max)
            return QTensor(ints, scale)
        ints = x.to(torch.float32) - zp.to(torch.float32) if not isinstance(x, QTensor) else x.ints
        return QTensor(ints, scale)

    def quantize(self, node, args, attrs):
        scale = args[1].float()
        zp = args[2] if len(args) > 2 and args[2] is not None else torch.zeros((), dtype=torch.uint8)
        if scale.numel() != 1:
            raise UnsupportedGraphError(f"{node.name}: per-channel activation quantization")
        info = torch.iinfo(zp.dtype)
        # The integer view (q - zp) is carried on, so the DequantizeLinear that follows is exact.
        low, high = info.min - int(zp), info.max - int(zp)
        if isinstance(args[0], Accumulator):  # fused requantization, as onnxruntime does it
            acc = args[0]
            multiplier = (acc.scale / scale).to(torch.float32)
            return QTensor(quantize_ste(acc.acc.to(torch.float32) * multiplier, low, high), scale)
        x = self._float(args[0])
        return QTensor(quantize_ste(x / scale, low, high), scale)


# --------------------------------------------------------------------------- integer ops
class Accumulator:
    """int32 accumulator of a quantized Conv/Gemm/MatMul (exact integers held in a float
    tensor) and the scale s_x * s_w that dequantizes it. A QuantizeLinear that consumes it
    requantizes as onnxruntime's QLinearConv does: round(float32(acc) * (s_x * s_w / s_y))."""

    __slots__ = ("acc", "scale")

    def __init__(self, acc: torch.Tensor, scale: torch.Tensor):
        self.acc = acc
        self.scale = scale


def _rounded_term(g: torch.Tensor, sums: torch.Tensor) -> torch.Tensor:
    """floor((g * S + 2^(F-1)) / 2^F) in int64, as float64 (exact: |t| < 2^53)."""
    half = 1 << (LINEAR_FRACTION_BITS - 1)
    t = torch.div(g * sums + half, 1 << LINEAR_FRACTION_BITS, rounding_mode="floor")
    return t.to(torch.float64)


@torch.no_grad()
def _conv_linear_term(a: torch.Tensor, w_shape: torch.Size, params: ConvParams, g: torch.Tensor) -> torch.Tensor:
    """t (N, M, *S') of a conv: S from a ones kernel [G, C/G, *k] with groups G, each group's sum
    repeated to its M/G output channels."""
    m, groups = int(w_shape[0]), params.group
    if g.numel() != m:
        raise UnsupportedGraphError(f"linear term has {g.numel()} coefficients for {m} output channels")
    ones = torch.ones((groups, *w_shape[1:]), dtype=torch.float64, device=a.device)
    sums = _float_conv(a.detach().to(torch.float64), ones, params)  # (N, G, *S'), exact integers
    sums = sums.repeat_interleave(m // groups, dim=1).to(torch.int64)
    return _rounded_term(_channel(g.to(a.device), sums.ndim), sums)


@torch.no_grad()
def _matmul_linear_term(a: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """t (..., M) of a MatMul: S = sum_k a[..., k] of each row."""
    sums = a.detach().to(torch.float64).sum(dim=-1, keepdim=True).to(torch.int64)
    return _rounded_term(g.to(a.device), sums)


def _channel(scale: torch.Tensor, ndim: int, axis: int = 1) -> torch.Tensor:
    """Per-channel (or scalar) scale shaped to broadcast along `axis` of an ndim tensor."""
    if scale.numel() == 1:
        return scale.reshape(())
    shape = [1] * ndim
    shape[axis] = -1
    return scale.reshape(shape)


def _conv(em, node, args, attrs):
    x, w = args[0], args[1]
    b = args[2] if len(args) > 2 else None
    spatial = (x.ints if isinstance(x, QTensor) else x).ndim - 2
    if attrs.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
        raise UnsupportedGraphError(f"{node.name}: auto_pad")
    params = ConvParams(tuple(attrs.get("strides", [1] * spatial)), tuple(attrs.get("pads", [0] * 2 * spatial)),
                        tuple(attrs.get("dilations", [1] * spatial)), attrs.get("group", 1))
    if isinstance(x, QTensor) and isinstance(w, QTensor):
        acc = em.conv_products(node.name, x.ints, w.ints, params)
        scale = (x.scale.reshape(()) * w.scale.reshape(-1)).to(torch.float32)
        if _bias_in_accumulator(b, scale):
            return Accumulator(acc + _channel(b.ints.to(acc.dtype), acc.ndim), _channel(scale, acc.ndim))
        out = acc.to(torch.float32) * _channel(scale, acc.ndim)
    else:
        out = _float_conv(em._float(x), em._float(w), params)
    if b is not None:
        out = out + _channel(em._float(b), out.ndim)
    return out


@functools.cache
def _kernels_available() -> bool:
    from runtime.ort import LibraryNotFoundError, library_path

    try:
        library_path()
    except LibraryNotFoundError:
        return False
    return True


def _bias_in_accumulator(b, scale: torch.Tensor) -> bool:
    """An int32 bias joins the accumulator only at its scale s_x * s_w (what QLinearConv and
    the approximation pass assume); a bias quantized at any other scale is added in float, as
    onnxruntime does when it leaves such a node unfused."""
    if not isinstance(b, QTensor):
        return False
    bias_scale, accumulator_scale = torch.broadcast_tensors(b.scale.reshape(-1).float(), scale.reshape(-1).float())
    return bool(torch.allclose(bias_scale, accumulator_scale, rtol=1e-6, atol=0.0))


def _float_conv(x, w, params: ConvParams):
    fn = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}[params.spatial]
    s = params.spatial
    pad = [v for i in reversed(range(s)) for v in (params.pads[i], params.pads[i + s])]
    return fn(F.pad(x, pad), w, None, params.strides, 0, params.dilations, params.group)


def _int_matmul(em, node, a: QTensor, b: QTensor, transpose_b: bool = False) -> Accumulator:
    w = b.ints.t() if transpose_b else b.ints
    if w.ndim != 2:
        if b.scale.numel() > 1:
            raise UnsupportedGraphError(f"{node.name}: per-channel scale on a batched MatMul operand")
        acc = torch.matmul(a.ints.to(exact_dtype(w.shape[-2])), w.to(exact_dtype(w.shape[-2])))
        acc = em.add_linear_term(node.name, a.ints, acc)
    else:
        acc = em.matmul_products(node.name, a.ints, w)
    scale = (a.scale.reshape(()) * b.scale.reshape(-1)).to(torch.float32)
    return Accumulator(acc, scale if scale.numel() > 1 else scale.reshape(()))


def _matmul(em, node, args, attrs):
    a, b = args
    if isinstance(a, QTensor) and isinstance(b, QTensor):
        return _int_matmul(em, node, a, b)
    return torch.matmul(em._float(a), em._float(b))


def _gemm(em, node, args, attrs):
    a, b = args[0], args[1]
    c = args[2] if len(args) > 2 else None
    alpha, beta = attrs.get("alpha", 1.0), attrs.get("beta", 1.0)
    trans_a, trans_b = attrs.get("transA", 0), attrs.get("transB", 0)
    if isinstance(a, QTensor) and isinstance(b, QTensor) and not trans_a and alpha == 1.0:
        out = _int_matmul(em, node, a, b, transpose_b=bool(trans_b))
        if _bias_in_accumulator(c, out.scale) and beta == 1.0:
            return Accumulator(out.acc + c.ints.to(out.acc.dtype).reshape(-1), out.scale)
        out = em._float(out)
    else:
        av, bv = em._float(a), em._float(b)
        out = alpha * torch.matmul(av.t() if trans_a else av, bv.t() if trans_b else bv)
    if c is not None:
        out = out + beta * em._float(c)
    return out


# ----------------------------------------------------------------------------- float ops
def _f(fn: Callable) -> Callable:
    """An op on float values: QTensors are dequantized first."""
    def op(em, node, args, attrs):
        return fn(*[em._float(a) if a is not None else None for a in args], **{"attrs": attrs})
    return op


def _binary(fn):
    return _f(lambda a, b, attrs: fn(a, b))


def _unary(fn):
    return _f(lambda x, attrs: fn(x))


def _div(a, b, attrs):
    if not a.is_floating_point() and not b.is_floating_point():
        return torch.div(a, b, rounding_mode="trunc")
    return a / b


def _axes(args, attrs, index=1):
    if len(args) > index and args[index] is not None:
        return [int(v) for v in args[index].tolist()]
    return attrs.get("axes")


def _reduce(fn):
    def op(em, node, args, attrs):
        x = em._float(args[0])
        axes = _axes(args, attrs)
        keep = bool(attrs.get("keepdims", 1))
        if not axes:
            if attrs.get("noop_with_empty_axes", 0):
                return x
            axes = list(range(x.ndim))
        return fn(x, axes, keep)
    return op


def _reshape(x, shape, attrs):
    shape = [int(s) for s in shape.tolist()]
    if not attrs.get("allowzero", 0):
        shape = [x.shape[i] if s == 0 else s for i, s in enumerate(shape)]
    return x.reshape(shape)


def _slice(em, node, args, attrs):
    x = em._float(args[0])
    starts, ends = args[1].tolist(), args[2].tolist()
    axes = args[3].tolist() if len(args) > 3 and args[3] is not None else list(range(len(starts)))
    steps = args[4].tolist() if len(args) > 4 and args[4] is not None else [1] * len(starts)
    index = [slice(None)] * x.ndim
    for start, end, axis, step in zip(starts, ends, axes, steps):
        dim = x.shape[axis]
        if step < 0:
            # torch slicing has no negative step: flip, then slice the mirrored range
            start = min(max(start + dim if start < 0 else start, -1), dim - 1)
            end = min(max(end + dim if end < 0 else end, -1), dim - 1)
            x = torch.flip(x, [axis])
            index_axis = slice(dim - 1 - start, dim - 1 - end, -step)
            x = x[tuple([slice(None)] * (axis % x.ndim) + [index_axis])]
            continue
        start = max(min(start + dim if start < 0 else start, dim), 0)
        end = max(min(end + dim if end < 0 else end, dim), 0)
        index[axis] = slice(start, end, step)
    return x[tuple(index)]


def _gather(x, idx, attrs):
    axis = attrs.get("axis", 0)
    idx = idx.long()
    idx = torch.where(idx < 0, idx + x.shape[axis], idx)
    out = torch.index_select(x, axis, idx.reshape(-1))
    return out.reshape(x.shape[:axis % x.ndim] + idx.shape + x.shape[axis % x.ndim + 1:])


def _scatter_nd(data, indices, updates, attrs):
    reduction = attrs.get("reduction", b"none")
    reduction = reduction.decode() if isinstance(reduction, bytes) else reduction
    out = data.clone()
    k = indices.shape[-1]
    flat_idx = indices.reshape(-1, k).long()
    upd = updates.reshape((flat_idx.shape[0],) + tuple(data.shape[k:]))
    index = tuple(flat_idx[:, i] for i in range(k))
    if reduction == "add":
        return out.index_put(index, upd, accumulate=True)
    if reduction != "none":
        raise UnsupportedGraphError(f"ScatterND reduction {reduction}")
    return out.index_put(index, upd)


def _scatter_elements(data, indices, updates, attrs):
    axis = attrs.get("axis", 0)
    reduction = attrs.get("reduction", b"none")
    reduction = reduction.decode() if isinstance(reduction, bytes) else reduction
    indices = indices.long()
    indices = torch.where(indices < 0, indices + data.shape[axis], indices)
    if reduction == "none":
        return data.scatter(axis, indices, updates)
    return data.scatter_reduce(axis, indices, updates, {"add": "sum", "mul": "prod", "max": "amax",
                                                         "min": "amin"}[reduction])


def _topk(em, node, args, attrs):
    x, k = em._float(args[0]), int(args[1].reshape(-1)[0])
    values, indices = torch.topk(x, k, dim=attrs.get("axis", -1), largest=bool(attrs.get("largest", 1)),
                                 sorted=bool(attrs.get("sorted", 1)))
    return values, indices


def _pool(kind):
    def op(em, node, args, attrs):
        x = em._float(args[0])
        kernel = attrs["kernel_shape"]
        spatial = len(kernel)
        strides = attrs.get("strides", [1] * spatial)
        pads = attrs.get("pads", [0] * 2 * spatial)
        ceil = bool(attrs.get("ceil_mode", 0))
        if any(pads[i] != pads[i + spatial] for i in range(spatial)):
            raise UnsupportedGraphError(f"{node.name}: asymmetric pooling pads")
        if kind == "max":
            fn = {1: F.max_pool1d, 2: F.max_pool2d}[spatial]
            return fn(x, kernel, strides, pads[:spatial], attrs.get("dilations", [1] * spatial), ceil)
        fn = {1: F.avg_pool1d, 2: F.avg_pool2d}[spatial]
        return fn(x, kernel, strides, pads[:spatial], ceil, not attrs.get("count_include_pad", 0) == 0)
    return op


def _layer_norm(x, scale, bias=None, attrs=None):
    axis = attrs.get("axis", -1)
    shape = x.shape[axis % x.ndim:]
    return F.layer_norm(x, shape, scale, bias, attrs.get("epsilon", 1e-5))


def _split(em, node, args, attrs):
    x = em._float(args[0])
    axis = attrs.get("axis", 0)
    sizes = args[1].tolist() if len(args) > 1 and args[1] is not None else attrs.get("split")
    if sizes is None:
        parts = len(node.output)
        sizes = [x.shape[axis] // parts] * parts
    return torch.split(x, sizes, dim=axis)


def _cast(x, attrs):
    return x.to(_ONNX_TO_TORCH[attrs["to"]])


def _constant_of_shape(shape, attrs):
    value = attrs.get("value")
    fill = torch.from_numpy(np.array(numpy_helper.to_array(value))) if value is not None else torch.zeros(1)
    return torch.full([int(s) for s in shape.tolist()], fill.reshape(-1)[0].item(), dtype=fill.dtype,
                      device=shape.device)


def _squeeze(em, node, args, attrs):
    x = em._float(args[0])
    axes = _axes(args, attrs)
    if axes is None:
        return x.squeeze()
    for axis in sorted((a % x.ndim for a in axes), reverse=True):
        x = x.squeeze(axis)
    return x


def _unsqueeze(em, node, args, attrs):
    x = em._float(args[0])
    axes = _axes(args, attrs)
    out_rank = x.ndim + len(axes)
    for axis in sorted(a % out_rank for a in axes):
        x = x.unsqueeze(axis)
    return x


def _expand(x, shape, attrs):
    shape = [int(s) for s in shape.tolist()]
    target = torch.broadcast_shapes(tuple(x.shape), tuple(shape))
    return x.expand(target)


def _softmax(fn):
    return _f(lambda x, attrs: fn(x, dim=attrs.get("axis", -1)))


_OPS: dict[str, Callable] = {
    "QuantizeLinear": QDQEmulation.quantize,
    "DequantizeLinear": QDQEmulation.dequantize,
    "Conv": _conv, "Gemm": _gemm, "MatMul": _matmul,
    "Identity": _unary(lambda x: x), "Dropout": _f(lambda x, *rest, attrs: x),
    "Relu": _unary(F.relu), "Sigmoid": _unary(torch.sigmoid), "Tanh": _unary(torch.tanh),
    "Erf": _unary(torch.erf), "Exp": _unary(torch.exp), "Log": _unary(torch.log),
    "Sqrt": _unary(torch.sqrt), "Neg": _unary(torch.neg), "Abs": _unary(torch.abs),
    "Reciprocal": _unary(torch.reciprocal), "Floor": _unary(torch.floor), "Ceil": _unary(torch.ceil),
    "Not": _unary(torch.logical_not),
    "Gelu": _f(lambda x, attrs: F.gelu(x, approximate="tanh" if attrs.get("approximate", b"none") in
                                        (b"tanh", "tanh") else "none")),
    "Add": _binary(torch.add), "Sub": _binary(torch.sub), "Mul": _binary(torch.mul), "Div": _f(_div),
    "Pow": _binary(torch.pow), "Equal": _binary(torch.eq), "Less": _binary(torch.lt),
    "Greater": _binary(torch.gt), "LessOrEqual": _binary(torch.le), "GreaterOrEqual": _binary(torch.ge),
    "And": _binary(torch.logical_and), "Or": _binary(torch.logical_or),
    "Where": _f(lambda c, a, b, attrs: torch.where(c, a, b)),
    "Min": _f(lambda *xs, attrs: torch.stack(torch.broadcast_tensors(*xs)).amin(0)),
    "Max": _f(lambda *xs, attrs: torch.stack(torch.broadcast_tensors(*xs)).amax(0)),
    "Clip": _f(lambda x, lo=None, hi=None, attrs=None: torch.clamp(x, lo, hi)),
    "Softmax": _softmax(torch.softmax), "LogSoftmax": _softmax(torch.log_softmax),
    "LayerNormalization": _f(_layer_norm),
    "GlobalAveragePool": _unary(lambda x: x.mean(dim=tuple(range(2, x.ndim)), keepdim=True)),
    "GlobalMaxPool": _unary(lambda x: x.amax(dim=tuple(range(2, x.ndim)), keepdim=True)),
    "AveragePool": _pool("avg"), "MaxPool": _pool("max"),
    "Flatten": _f(lambda x, attrs: x.reshape(int(np.prod(x.shape[:attrs.get("axis", 1)])), -1)),
    "Reshape": _f(_reshape), "Transpose": _f(lambda x, attrs: x.permute(attrs.get("perm", list(range(x.ndim))[::-1]))),
    "Concat": _f(lambda *xs, attrs: torch.cat(xs, dim=attrs["axis"])),
    "Shape": _f(lambda x, attrs: torch.tensor(x.shape[attrs.get("start", 0):attrs.get("end", None)],
                                              dtype=torch.int64, device=x.device)),
    "Size": _f(lambda x, attrs: torch.tensor(x.numel(), dtype=torch.int64, device=x.device)),
    "Gather": _f(_gather),
    "GatherElements": _f(lambda x, i, attrs: torch.gather(x, attrs.get("axis", 0), i.long())),
    "Unsqueeze": _unsqueeze, "Squeeze": _squeeze, "Slice": _slice, "Split": _split,
    "Cast": _f(_cast), "ConstantOfShape": _f(_constant_of_shape), "Expand": _f(_expand),
    "NonZero": _unary(lambda x: torch.stack(torch.nonzero(x, as_tuple=True)) if x.ndim else
                      torch.nonzero(x.reshape(1)).t()),
    "ScatterND": _f(_scatter_nd), "ScatterElements": _f(_scatter_elements), "TopK": _topk,
    "ReduceMean": _reduce(lambda x, axes, keep: x.mean(dim=axes, keepdim=keep)),
    "ReduceSum": _reduce(lambda x, axes, keep: x.sum(dim=axes, keepdim=keep)),
    "ReduceMax": _reduce(lambda x, axes, keep: x.amax(dim=axes, keepdim=keep)),
    "ReduceMin": _reduce(lambda x, axes, keep: x.amin(dim=axes, keepdim=keep)),
    "ReduceL2": _reduce(lambda x, axes, keep: torch.sqrt((x * x).sum(dim=axes, keepdim=keep))),
    "ArgMax": _f(lambda x, attrs: torch.argmax(x, dim=attrs.get("axis", 0), keepdim=bool(attrs.get("keepdims", 1)))),
    "Range": _f(lambda start, limit, delta, attrs: torch.arange(start.item(), limit.item(), delta.item(),
                                                                 dtype=start.dtype, device=start.device)),
    "Tile": _f(lambda x, reps, attrs: x.repeat([int(r) for r in reps.tolist()])),
    "Einsum": _f(lambda *xs, attrs: torch.einsum(attrs["equation"].decode() if isinstance(attrs["equation"], bytes)
                                                 else attrs["equation"], *xs)),
}
