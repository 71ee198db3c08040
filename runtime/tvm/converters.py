"""Relax converters for the ONNX ops that TVM 0.27's ONNX frontend lacks or runs slowly:
axmoe.ApproxConvInteger, axmoe.ApproxMatMulInteger, ConvInteger, MatMulInteger (with
constant int8 weights), QLinearConv and QLinearMatMul. Registered in `frontend.CONVERTERS`.

Every product is computed by the kernels of `kernels.py` (`vnni.py` on AVX-512 VNNI targets):

    ApproxConvInteger(x, w, x_zp, w_zp, LUT)  y[n, m, p] = sum_k LUT[a + 128, b + 128]
        a = x - x_zp (x uint8 with zero point 128, or int8 with zero point 0), b = w (int8,
        zero point 0). Product form `dot` when the LUT is a constant with an exact
        decomposition (`multipliers.decompose`) whose masked, scaled weights fit int8, else
        `lut` (any table, a runtime input too).
    ApproxMatMulInteger(A, B, a_zp, b_zp, LUT)  Y[..., m, n] = sum_k LUT[A - a_zp + 128, B + 128]
        B a 2-D [K, N] weight; A's leading dims are flattened into rows.
    Both with the optional 6th input `linear` (a constant int64 g [M]): the linear compensation
        term t = floor((g_o * S + 2^(F-1)) / 2^F) (modelfile.ops.LINEAR_FRACTION_BITS) added to
        the int32 accumulator, S the sum of a over each receptive field (`add_linear`: an int32
        conv with ones weights [G, C/G, kH, kW] (groups G) or a row sum, then int64 arithmetic).
    ConvInteger / MatMulInteger: the exact single-term `dot` (any uint8 / int8 activation
        zero point; int8 weights with zero point 0 -- otherwise TVM's own lowering).
    QLinearConv / QLinearMatMul: the integer op, then onnxruntime's requantization
        y = saturate(round_half_even(float32(acc + bias) * float32(s_x * s_w / s_y)) + z_y)
        (`requantize`, which contrib_ops.QGemm shares).

Shapes: spatial sizes and weights' shapes are static, the batch (and the rows routed to a MoE
expert) may be symbolic.
"""

from __future__ import annotations

import functools

import numpy as np
import tvm
from tvm import relax
from tvm.relax.frontend.onnx import onnx_frontend as tvm_onnx
from tvm.relax.frontend.onnx.onnx_frontend import OnnxOpConverter

from modelfile.ops import LINEAR_FRACTION_BITS
from multipliers.decompose import decompose
from runtime.tvm import kernels, schedule, vnni
from runtime.tvm.config import LoweringConfig
from runtime.tvm.kernels import ConvGeometry, Product

KERNEL_ATTR = schedule.KERNEL_ATTR
OPAQUE = 8  # relax OpPatternKind.kOpaque: FuseOps leaves the kernels (scheduled on their own) alone


class ConversionError(ValueError):
    """A node the converters cannot lower exactly (names the node's op and what is wrong)."""


# ---------------------------------------------------------------------------- helpers
def _constant(expr) -> np.ndarray | None:
    return expr.value.numpy() if isinstance(expr, tvm.ir.GenericConst) else None


def _dtype(expr) -> str:
    return str(expr.ty.dtype)


def _static_shape(expr, op: str, what: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in expr.ty.shape.values)
    except (TypeError, AttributeError):
        raise ConversionError(f"{op}: {what} needs a static shape, got {expr.ty}") from None


def _zero_point(expr, op: str, what: str, default: int = 0) -> int:
    """A constant zero point, all entries equal (per-row zero points that agree included)."""
    if expr is None:
        return default
    value = _constant(expr)
    if value is None:
        raise ConversionError(f"{op}: {what} must be a constant")
    flat = value.reshape(-1).astype(np.int64)
    if flat.size == 0 or np.any(flat != flat[0]):
        raise ConversionError(f"{op}: {what} must be one value, got {value.tolist()}")
    return int(flat[0])


def stored_byte(bb, x, zero_point: int, op: str):
    """(uint8 x, zero point): an int8 activation x with zero point z is the uint8 x + 128 with
    zero point z + 128 (same a = x - z)."""
    dtype = _dtype(x)
    if dtype == "uint8":
        return x, zero_point
    if dtype == "int8":
        widened = relax.op.add(relax.op.astype(x, "int16"), relax.const(128, "int16"))
        return bb.normalize(relax.op.astype(widened, "uint8")), zero_point + 128
    raise ConversionError(f"{op}: activations must be uint8 or int8, got {dtype}")


def _emit_kernel(bb, kind: str, fte, *args):
    """emit_te of a kernel compute, its PrimFunc marked opaque and named for `schedule`."""
    var = bb.emit_te(fte, *args, primfunc_name_hint=f"axmoe_{kind}")
    _mark(bb, bb.lookup_binding(var).args[0], kind)
    return var


def _mark(bb, gvar, kind: str) -> None:
    func = bb.get()[gvar]
    bb.update_func(gvar, func.with_attrs({"op_pattern": OPAQUE, KERNEL_ATTR: kind}))


def _emit_tir(bb, name: str, func, args, out_shape, out_dtype: str):
    """call_tir of a ready-made (already scheduled) PrimFunc."""
    gvar = bb.add_func(func.with_attrs({"op_pattern": OPAQUE, KERNEL_ATTR: "scheduled"}), name)
    return bb.emit(relax.call_tir(gvar, args, relax.TensorType(out_shape, out_dtype)))


@functools.lru_cache(maxsize=16)
def _decomposition(lut_bytes: bytes):
    return decompose(np.frombuffer(lut_bytes, dtype=np.int32).reshape(256, 256))


def _target_has_vnni() -> bool:
    target = tvm.target.Target.current(allow_none=True)
    return target is not None and schedule.has_vnni(target)


def choose_product(lut, weight: np.ndarray | None, zero_point: int, op: str, kernel: str) -> Product:
    """`dot` when the LUT decomposes exactly and every c_t (b & mb_t) fits int8, else `lut`.

    kernel: "auto" (that rule) or "lut" (always the table).
    """
    if zero_point != 128:  # the callers check the activation first; the lut form needs x = a + 128
        raise ConversionError(f"{op}: the stored activation's zero point must be 128, got {zero_point}")
    table = _constant(lut)
    if kernel == "lut" or table is None or weight is None:
        return Product("lut")
    decomposition = _decomposition(np.ascontiguousarray(table, dtype=np.int32).tobytes())
    if not decomposition.exact:
        return Product("lut")
    b = weight.astype(np.int64)
    for term in decomposition.terms:
        mask = term.mask_b - 256 if term.mask_b & 0x80 else term.mask_b
        scaled = term.coef * (b & mask)
        if scaled.size and (scaled.min() < -128 or scaled.max() > 127):
            return Product("lut")
    return Product("dot", tuple(decomposition.terms))


def _check_lut(lut, op: str) -> None:
    if lut is None:
        raise ConversionError(f"{op}: the LUT input (last) is missing")
    if _dtype(lut) != "int32":
        raise ConversionError(f"{op}: the LUT must be int32, got {_dtype(lut)}")
    shape = _static_shape(lut, op, "the LUT")
    if shape != (256, 256):
        raise ConversionError(f"{op}: the LUT must have shape (256, 256), got {shape}")


def _check_weight(w, w_zp, op: str) -> None:
    if _dtype(w) != "int8":
        raise ConversionError(f"{op}: weights must be int8, got {_dtype(w)}")
    if _zero_point(w_zp, op, "the weight zero point") != 0:
        raise ConversionError(f"{op}: the weight zero point must be 0")


# ------------------------------------------------------------------------------- conv
def _conv_geometry(attr: dict, x_shape, w_shape, op: str) -> tuple[ConvGeometry, int]:
    """2-D geometry (a 1-D conv gets a unit first axis) and the number of spatial dims."""
    spatial = len(x_shape) - 2
    if spatial not in (1, 2) or len(w_shape) != len(x_shape):
        raise ConversionError(f"{op}: 1-D or 2-D convolutions only, got input {x_shape} and weight {w_shape}")
    kernel = tuple(w_shape[2:])
    if "kernel_shape" in attr and tuple(attr["kernel_shape"]) != kernel:
        raise ConversionError(f"{op}: kernel_shape {attr['kernel_shape']} does not match the weight {w_shape}")
    strides = tuple(attr.get("strides", (1,) * spatial))
    dilations = tuple(attr.get("dilations", (1,) * spatial))
    pads = tuple(attr.get("pads", (0,) * 2 * spatial))
    auto_pad = attr.get("auto_pad", b"NOTSET")
    auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else auto_pad
    if auto_pad == "VALID":
        pads = (0,) * 2 * spatial
    elif auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        begin, end = [], []
        for i in range(spatial):
            out = -(-x_shape[2 + i] // strides[i])
            total = max(0, (out - 1) * strides[i] + dilations[i] * (kernel[i] - 1) + 1 - x_shape[2 + i])
            small, large = total // 2, total - total // 2
            begin.append(small if auto_pad == "SAME_UPPER" else large)
            end.append(large if auto_pad == "SAME_UPPER" else small)
        pads = tuple(begin + end)
    elif auto_pad != "NOTSET":
        raise ConversionError(f"{op}: unknown auto_pad {auto_pad!r}")
    groups = int(attr.get("group", 1))
    channels = x_shape[1]
    if groups < 1 or channels % groups or w_shape[0] % groups or w_shape[1] != channels // groups:
        raise ConversionError(f"{op}: group={groups} does not fit {channels} input channels and weight {w_shape}")
    if spatial == 1:
        geometry = ConvGeometry((1, strides[0]), (0, pads[0], 0, pads[1]), (1, dilations[0]), groups)
    else:
        geometry = ConvGeometry(strides, pads, dilations, groups)
    return geometry, spatial


def emit_conv(bb, x, w, zero_point: int, geometry: ConvGeometry, spatial: int, product: Product, side, op: str):
    """int32 y [N, M, (OH,) OW] of the packed conv kernel; x uint8 with `zero_point`."""
    x_shape = list(x.ty.shape.values)
    w_shape = _static_shape(w, op, "the weight")
    if spatial == 1:
        x = bb.normalize(relax.op.reshape(x, [x_shape[0], x_shape[1], 1, x_shape[2]]))
        w = bb.normalize(relax.op.reshape(w, [w_shape[0], w_shape[1], 1, w_shape[2]]))
    _, channels, height, width = (x.ty.shape.values[i] for i in range(4))
    out_channels, _, kh, kw = (int(v) for v in w.ty.shape.values)
    out_size = (geometry.out_size(int(height), kh, 0), geometry.out_size(int(width), kw, 1))
    if min(out_size) <= 0:
        raise ConversionError(f"{op}: kernel {w_shape[2:]} does not fit input {x_shape[2:]} with pads {geometry.pads}")
    wp = bb.emit_te(lambda t: kernels.pack_conv_weight(t, product, geometry.groups), w,
                    primfunc_name_hint="axmoe_pack_weight")
    if product.kind == "dot":
        side = bb.emit_te(lambda t: kernels.conv_compensation(t, product, zero_point), wp,
                          primfunc_name_hint="axmoe_compensation")
    xp = _emit_kernel(bb, "pack", lambda t: kernels.pack_conv_input(t, product, geometry, zero_point), x)
    if product.kind == "dot" and _target_has_vnni():
        func = vnni.conv2d(wp.ty.shape.values, xp.ty.shape.values, out_size, geometry.strides,
                           geometry.dilations, schedule._largest_divisor(out_size[1], schedule.OW_TILE))
        wp_shape = [int(v) for v in wp.ty.shape.values]
        out_shape = [xp.ty.shape.values[0], wp_shape[0], wp_shape[1], *out_size, kernels.LANES]
        acc = _emit_tir(bb, "axmoe_conv2d_vnni", func, [xp, wp, side], out_shape, "int32")
    else:
        acc = _emit_kernel(bb, "conv2d", lambda *t: kernels.conv2d(*t, geometry, product, out_size), xp, wp, side)
    return unblock_conv(bb, acc, out_channels, geometry.groups, x_shape[0], out_size, spatial)


def unblock_conv(bb, acc, out_channels: int, groups: int, batch, out_size, spatial: int):
    """acc [N, G, MB, OH, OW, 16] -> y [N, M, OH, OW] (or [N, M, OW] for a 1-D conv)."""
    _, _, blocks, oh, ow, lanes = (acc.ty.shape.values[i] for i in range(6))
    per_group = out_channels // groups
    y = relax.op.permute_dims(acc, [0, 1, 2, 5, 3, 4])
    y = relax.op.reshape(y, [batch, groups, int(blocks) * lanes, oh, ow])
    if int(blocks) * lanes != per_group:
        y = relax.op.strided_slice(y, axes=[2], begin=[0], end=[per_group])
    shape = [batch, out_channels, *out_size] if spatial == 2 else [batch, out_channels, out_size[1]]
    return bb.normalize(relax.op.reshape(y, shape))


def emit_matmul(bb, a, w, zero_point: int, product: Product, side, op: str):
    """int32 Y [..., M, N] of the packed matmul kernel; A uint8 with `zero_point`, W [K, N]."""
    a_shape = list(a.ty.shape.values)
    k, n = _static_shape(w, op, "the weight")
    if int(a_shape[-1]) != k:
        raise ConversionError(f"{op}: shapes {a_shape} and {[k, n]} do not align")
    rows = functools.reduce(lambda p, q: p * q, a_shape[:-1], tvm.tirx.const(1, "int64"))
    a2 = bb.normalize(relax.op.reshape(a, [rows, k]))
    wp = bb.emit_te(lambda t: kernels.pack_matmul_weight(t, product), w, primfunc_name_hint="axmoe_pack_weight")
    if product.kind == "dot":
        side = bb.emit_te(lambda t: kernels.matmul_compensation(t, product, zero_point), wp,
                          primfunc_name_hint="axmoe_compensation")
    xa = _emit_kernel(bb, "pack", lambda t: kernels.pack_matmul_input(t, product), a2)
    if product.kind == "dot" and _target_has_vnni():
        func = vnni.matmul(wp.ty.shape.values, kernels.ROWS)
        nb = int(wp.ty.shape.values[0])
        acc = _emit_tir(bb, "axmoe_matmul_vnni", func, [xa, wp, side], [xa.ty.shape.values[0], nb, kernels.LANES],
                        "int32")
    else:
        acc = _emit_kernel(bb, "matmul", lambda *t: kernels.matmul(*t, product), xa, wp, side)
    padded_rows, blocks, lanes = acc.ty.shape.values
    y = relax.op.reshape(acc, [padded_rows, int(blocks) * lanes])
    y = relax.op.strided_slice(y, axes=[0, 1], begin=[0, 0], end=[rows, n])
    return bb.normalize(relax.op.reshape(y, [*a_shape[:-1], n]))


# -------------------------------------------------------------------------- converters
class ConfiguredConverter(OnnxOpConverter):
    """A converter whose lowering depends on the import's `LoweringConfig`: its `_impl_v*`
    take the config as a fifth argument (`frontend.ONNXImporter` passes it; TVM's own
    converters keep their four)."""


def _approx_operands(bb, inputs, op: str, names: str):
    """(x, w, lut, stored byte q, its zero point) of an axmoe op, its inputs checked: int8
    weights with zero point 0, a (256, 256) int32 LUT, a signed activation (uint8 with zero
    point 128 or int8 with zero point 0)."""
    if len(inputs) not in (5, 6):
        raise ConversionError(f"{op}: expects 5 or 6 inputs ({names}, linear), got {len(inputs)}")
    x, w, x_zp, w_zp, lut = inputs[:5]
    _check_lut(lut, op)
    _check_weight(w, w_zp, op)
    zp = _zero_point(x_zp, op, "the activation zero point")
    if (_dtype(x), zp) not in (("uint8", 128), ("int8", 0)):
        raise ConversionError(f"{op}: activations must be uint8 with zero point 128 or int8 with zero point 0, "
                              f"got {_dtype(x)} with zero point {zp}")
    q, zp = stored_byte(bb, x, zp, op)
    return x, w, lut, q, zp


def _linear_coefficients(inputs, channels: int, op: str) -> np.ndarray | None:
    """The constant int64 g [M] of the optional `linear` input, or None."""
    if len(inputs) < 6 or inputs[5] is None:
        return None
    g = _constant(inputs[5])
    if g is None:
        raise ConversionError(f"{op}: the linear input must be a constant")
    if g.dtype != np.int64 or g.shape != (channels,):
        raise ConversionError(f"{op}: linear must be int64 [{channels}], got {g.dtype} {list(g.shape)}")
    return g


def add_linear(bb, acc, q, zero_point: int, g: np.ndarray, op: str, geometry: ConvGeometry | None = None,
               spatial: int = 0, kernel: tuple = ()):
    """acc + floor((g_o S + 2^(F-1)) / 2^F), S the sum of a = q - zero_point over each output's
    receptive field (conv: `geometry`, `kernel` (kH, kW) in its 2-D form; None: a matmul row)."""
    a = relax.op.subtract(relax.op.astype(q, "int32"), relax.const(zero_point, "int32"))
    if geometry is None:
        s = relax.op.astype(relax.op.sum(a, axis=[-1], keepdims=True), "int64")  # [..., 1]
        product = bb.normalize(relax.op.multiply(s, relax.const(g, "int64")))
    else:
        shape = list(q.ty.shape.values)
        if spatial == 1:
            a = relax.op.reshape(a, [shape[0], shape[1], 1, shape[2]])
        groups = geometry.groups
        ones = np.ones((groups, int(shape[1]) // groups, *kernel), np.int32)
        s = relax.op.nn.conv2d(a, relax.const(ones, "int32"), strides=geometry.strides, padding=geometry.pads,
                               dilation=geometry.dilations, groups=groups, out_dtype="int32")
        s = bb.normalize(relax.op.astype(s, "int64"))  # [N, G, OH, OW]
        batch, _, oh, ow = s.ty.shape.values
        grouped = relax.op.reshape(s, [batch, groups, 1, oh, ow])
        weighted = relax.op.multiply(grouped, relax.const(g.reshape(1, groups, -1, 1, 1), "int64"))
        product = bb.normalize(relax.op.reshape(weighted, list(acc.ty.shape.values)))
    half = relax.const(1 << (LINEAR_FRACTION_BITS - 1), "int64")
    term = relax.op.floor_divide(relax.op.add(product, half), relax.const(1 << LINEAR_FRACTION_BITS, "int64"))
    return bb.normalize(relax.op.add(acc, relax.op.astype(term, "int32")))


class ApproxConvInteger(ConfiguredConverter):
    """axmoe.ApproxConvInteger: ConvInteger with every product LUT[a + 128, b + 128] (+ linear)."""

    @classmethod
    def _impl_v1(cls, bb, inputs, attr, params, config: LoweringConfig):
        op = "axmoe.ApproxConvInteger"
        x, w, lut, q, zp = _approx_operands(bb, inputs, op, "x, w, x_zero_point, w_zero_point, LUT")
        x_shape = _static_shape_tail(x, op)
        w_shape = _static_shape(w, op, "the weight")
        geometry, spatial = _conv_geometry(attr, x_shape, w_shape, op)
        g = _linear_coefficients(inputs, w_shape[0], op)
        product = choose_product(lut, _constant(w), zp, op, config.kernel)
        acc = emit_conv(bb, q, w, zp, geometry, spatial, product, lut, op)
        if g is None:
            return acc
        kernel = tuple(w_shape[2:]) if spatial == 2 else (1, w_shape[2])
        return add_linear(bb, bb.normalize(acc), q, zp, g, op, geometry, spatial, kernel)


class ApproxMatMulInteger(ConfiguredConverter):
    """axmoe.ApproxMatMulInteger: MatMulInteger with every product LUT[a + 128, b + 128] (+ linear)."""

    @classmethod
    def _impl_v1(cls, bb, inputs, attr, params, config: LoweringConfig):
        op = "axmoe.ApproxMatMulInteger"
        _, w, lut, q, zp = _approx_operands(bb, inputs, op, "A, B, a_zero_point, b_zero_point, LUT")
        w_shape = _static_shape(w, op, "B")
        if len(w_shape) != 2:
            raise ConversionError(f"{op}: B must be a 2-D [K, N] weight, got shape {w.ty.shape}")
        g = _linear_coefficients(inputs, w_shape[1], op)
        product = choose_product(lut, _constant(w), zp, op, config.kernel)
        acc = emit_matmul(bb, q, w, zp, product, lut, op)
        return acc if g is None else add_linear(bb, bb.normalize(acc), q, zp, g, op)


def _static_shape_tail(x, op: str) -> tuple:
    """x's shape with a symbolic batch allowed: (batch, static dims...)."""
    values = list(x.ty.shape.values)
    try:
        return (values[0], *(int(v) for v in values[1:]))
    except TypeError:
        raise ConversionError(f"{op}: only the batch dimension may be symbolic, got {x.ty.shape}") from None


def _exact_integer_weight(w, w_zp) -> bool:
    """Whether the dot kernel takes these weights: int8 with zero point 0."""
    try:
        return _dtype(w) == "int8" and _zero_point(w_zp, "", "") == 0
    except ConversionError:
        return False


class ConvInteger(OnnxOpConverter):
    """ConvInteger: y = conv(x - x_zero_point, w - w_zero_point) in int32."""

    @classmethod
    def _impl_v10(cls, bb, inputs, attr, params):
        op = "ConvInteger"
        x, w, x_zp, w_zp = (inputs[i] for i in range(4))
        zp = _zero_point(x_zp, op, "x_zero_point")
        x_shape = _static_shape_tail(x, op)
        geometry, spatial = _conv_geometry(attr, x_shape, _static_shape(w, op, "the weight"), op)
        if _exact_integer_weight(w, w_zp):
            q, zp = stored_byte(bb, x, zp, op)
            return emit_conv(bb, q, w, zp, geometry, spatial, Product("dot"), None, op)
        # uint8 weights or a weight zero point: widen both and let TVM lower an int32 conv
        xi = relax.op.subtract(relax.op.astype(x, "int32"), relax.const(zp, "int32"))
        wi = relax.op.astype(w, "int32")
        if w_zp is not None:  # scalar or one per output channel
            wi = relax.op.subtract(wi, relax.op.reshape(relax.op.astype(w_zp, "int32"), [-1] + [1] * (spatial + 1)))
        conv = relax.op.nn.conv1d if spatial == 1 else relax.op.nn.conv2d
        padding = (geometry.pads[1], geometry.pads[3]) if spatial == 1 else geometry.pads
        strides = geometry.strides[1:] if spatial == 1 else geometry.strides
        dilations = geometry.dilations[1:] if spatial == 1 else geometry.dilations
        return conv(xi, wi, strides=strides, padding=padding, dilation=dilations, groups=geometry.groups,
                    out_dtype="int32")


class MatMulInteger(OnnxOpConverter):
    """MatMulInteger: Y = (A - a_zero_point) @ (B - b_zero_point) in int32. A constant 2-D
    int8 B with zero point 0 takes the dot kernel; anything else TVM's own converter."""

    @classmethod
    def _impl_v10(cls, bb, inputs, attr, params):
        op = "MatMulInteger"
        a, w, a_zp, w_zp = (inputs[i] for i in range(4))
        const_w = _constant(w)
        try:
            zp = _zero_point(a_zp, op, "a_zero_point")
        except ConversionError:
            zp = None  # per-row zero points that differ
        if const_w is not None and const_w.ndim == 2 and _exact_integer_weight(w, w_zp) and zp is not None:
            q, zp = stored_byte(bb, a, zp, op)
            return emit_matmul(bb, q, w, zp, Product("dot"), None, op)
        return tvm_onnx.MatMulInteger._impl_v10(bb, inputs, attr, params)


def requantize(bb, acc, bias, x_scale, w_scale, y_scale, y_zp, channel_axis: int, op: str):
    """onnxruntime's requantization of an int32 accumulator (see module docstring). Without a
    y_scale (QGemm's float output) it stops at the float: y = float32(acc + bias) * float32(s_x s_w)."""
    scales = [_constant(v) for v in (x_scale, w_scale, *([y_scale] if y_scale is not None else []))]
    if any(s is None for s in scales):
        raise ConversionError(f"{op}: scales must be constants")
    sx, sw, *sy = (np.asarray(s, dtype=np.float32) for s in scales)
    multiplier = (np.float32(sx.reshape(())) * sw.reshape(-1)).astype(np.float32)
    if sy:
        multiplier = (multiplier / np.float32(sy[0].reshape(()))).astype(np.float32)
    ndim = len(acc.ty.shape.values)
    shape = [1] * ndim
    if multiplier.size > 1:
        shape[channel_axis] = multiplier.size
    if bias is not None:
        bias_shape = [1] * ndim
        bias_shape[channel_axis] = -1
        acc = relax.op.add(acc, relax.op.reshape(bias, bias_shape))
    real = relax.op.multiply(relax.op.astype(acc, "float32"), relax.const(multiplier.reshape(shape)))
    if y_scale is None:
        return real
    zero = _zero_point(y_zp, op, "y_zero_point")
    out_dtype = _dtype(y_zp) if y_zp is not None else "uint8"
    return relax.op.quantize(real, relax.const(1.0, "float32"), relax.const(zero, out_dtype), axis=channel_axis,
                             out_dtype=out_dtype)


class QLinearConv(OnnxOpConverter):
    """QLinearConv: ConvInteger, then onnxruntime's requantization."""

    @classmethod
    def _impl_v10(cls, bb, inputs, attr, params):
        x, x_scale, x_zp, w, w_scale, w_zp, y_scale, y_zp = (inputs[i] for i in range(8))
        bias = inputs[8] if len(inputs) > 8 else None
        acc = ConvInteger._impl_v10(bb, [x, w, x_zp, w_zp], attr, params)
        return requantize(bb, bb.normalize(acc), bias, x_scale, w_scale, y_scale, y_zp, 1, "QLinearConv")


class QLinearMatMul(OnnxOpConverter):
    """QLinearMatMul: MatMulInteger, then onnxruntime's requantization (per-column scales)."""

    @classmethod
    def _impl_v10(cls, bb, inputs, attr, params):
        a, a_scale, a_zp, b, b_scale, b_zp, y_scale, y_zp = (inputs[i] for i in range(8))
        acc = MatMulInteger._impl_v10(bb, [a, b, a_zp, b_zp], attr, params)
        acc = bb.normalize(acc)
        return requantize(bb, acc, None, a_scale, b_scale, y_scale, y_zp, len(acc.ty.shape.values) - 1,
                          "QLinearMatMul")


class Expand(OnnxOpConverter):
    """Expand: y = x broadcast (numpy's two-way rule, dims right-aligned) with a target shape.

    TVM 0.27's converter keeps a symbolic or runtime target dim as it is: Expand(x[n, 16],
    shape) with shape = [min(1, batch), 16] (a Slice's shape) or a runtime [1, 16] then yields
    one row instead of n, and the ops after it read out of bounds -- the MoE combine of the
    exported models does exactly this. Here every output dim follows the rule:

        out_i = x_i if t_i is 1 or -1, else t_i if x_i == 1, else x_i   (t_i == x_i then)

    decided at run time when x_i is symbolic. An empty x_i = 0 stays 0: a MoE expert that no
    row was routed to keeps its empty tensors (a max(x_i, t_i) would make it one row, read
    out of bounds). A -1 is torch's "keep this dim" (`cls_token.expand(B, -1, -1)`): the exported graph turns
    it into 1 with Where(Equal(shape, -1), 1, shape), but TVM 0.27 folds that Where on a
    shape to the shape itself, so -1 reaches this converter.
    """

    @classmethod
    def _impl_v13(cls, bb, inputs, attr, params):
        data, shape = inputs[0], inputs[1]
        if isinstance(shape, relax.ShapeExpr):
            target = list(shape.values)
        elif isinstance(shape, tvm.ir.GenericConst):
            target = [tvm.tirx.const(int(v), "int64") for v in shape.value.numpy().reshape(-1)]
        else:
            ndim = int(shape.ty.shape.values[0])
            runtime_shape = bb.emit(relax.Call(relax.ExternFunc("vm.builtin.tensor_to_shape"), [shape],
                                               ty_args=[relax.ShapeType(ndim=ndim)]))
            target = [tvm.tirx.Var(f"expand_{i}", "int64") for i in range(ndim)]
            bb.match_cast(runtime_shape, relax.ShapeType(target))
        dims = list(data.ty.shape.values)
        one = tvm.tirx.const(1, "int64")
        if len(target) > len(dims):
            dims = [one] * (len(target) - len(dims)) + dims
            data = bb.normalize(relax.op.reshape(data, dims))
        target = [one] * (len(dims) - len(target)) + target

        def static(v, value):
            return isinstance(v, tvm.tirx.IntImm) and v.value == value

        out, unchanged = [], True
        for d, t in zip(dims, target):
            if static(t, 1) or static(t, -1) or d.same_as(t):
                out.append(d)
            elif static(d, 1):
                out.append(t)
                unchanged = False
            elif isinstance(d, tvm.tirx.IntImm) and isinstance(t, tvm.tirx.IntImm):
                if d.value != t.value:
                    raise ConversionError(f"Expand: cannot broadcast {dims} to {target}")
                out.append(d)
            else:
                out.append(tvm.tirx.Select(d == one, t, d))
                unchanged = False
        if unchanged:
            return data
        return bb.normalize(relax.op.broadcast_to(data, relax.ShapeExpr(out)))
