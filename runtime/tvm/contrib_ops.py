"""Relax converters for the onnxruntime contrib ops (domain com.microsoft) that onnxruntime's
graph optimizer puts into axmoe models (`ort_fusions`), computed as onnxruntime's CPU kernels
compute them where the result is integer, in the kernels' operation order otherwise.

    QLinearSoftmax(x, s_x, z_x, s_y, z_y)   int8 / uint8 softmax over the last axis, a table
        of 256 float32 exponentials (onnxruntime's, bit for bit):
            t[k] = float32(exp((bs - k) * s_x)),  bs = max(0, ln(FLT_MAX / D) - 5) / s_x
            e_i = t[max(x) - x_i],   S = e_0 + e_1 + ... + e_{D-1}     (float32, in order)
            y_i = min(round_half_even(e_i * floor(1 / s_y) / S) + z_y, qmax)
        Integer in, integer out: equal to onnxruntime on every input.
    SkipLayerNormalization(input, skip, gamma, beta, bias)   x = input + skip (+ bias),
        y = LayerNorm(x) over the last axis (TVM's kernel); outputs (y, -, -, x).
    BiasGelu(x, b)    v = x + b,  y = (v * 0.5) * (erf(v * float32(1 / sqrt(2))) + 1)
    FusedMatMul(A, B) alpha * op(A) @ op(B), op a transpose of the last two axes or not.
    QGemm(A, s_a, z_a, B, s_b, z_b, C, s_y, z_y)   a quantized Gemm (DQ -> Gemm -> Q fused):
            acc = op(A - z_a) @ op(B - z_b) + C                       int32, C broadcast as Gemm's
            y = saturate(round_half_even(float32(acc) * m) + z_y),  m = float32(alpha s_a s_b) / s_y
        or, without s_y and z_y, the float y = float32(acc) * float32(alpha s_a s_b) (s_b one per
        column or one for all). Integer in, integer out: equal to onnxruntime on every input.

The elementwise float math follows the kernels' operation order and rounds every product on
its own (`fp_exact`). What still rounds differently from onnxruntime in the last bit: erf
(MLAS's polynomial vs TVM's), float softmax, LayerNorm's sums and float matmuls (MLAS's
vectorised sums vs TVM's loops) -- on ViT a later QuantizeLinear absorbs that (tests).
"""

from __future__ import annotations

import math

import numpy as np
from tvm import relax, tirx
from tvm.relax.frontend.onnx.onnx_frontend import OnnxOpConverter

from runtime.tvm.converters import ConversionError, MatMulInteger, _constant, _dtype, _zero_point, requantize

FLT_MAX = float(np.finfo(np.float32).max)


# ---------------------------------------------------------------------------- QLinearSoftmax
def softmax_table(x_scale: float, reduce_len: int) -> np.ndarray:
    """onnxruntime's QLinearSoftmax table, indexed by k = max(x) - x (0..255): float32."""
    shift = math.log(float(np.float32(FLT_MAX) / np.float32(reduce_len)))  # float quotient, double log
    shift = max(0.0, shift - 5.0) / float(np.float32(x_scale))
    k = np.arange(256, dtype=np.float64)
    return np.exp((shift - k) * float(np.float32(x_scale))).astype(np.float32)


class QLinearSoftmax(OnnxOpConverter):
    """com.microsoft.QLinearSoftmax (opset attribute 13: softmax along `axis`)."""

    @classmethod
    def _impl_v1(cls, bb, inputs, attr, params):
        x, x_scale, _, y_scale, y_zp = (inputs[i] if i < len(inputs) else None for i in range(5))
        op = "QLinearSoftmax"
        dtype = _dtype(x)
        if dtype not in ("int8", "uint8"):
            raise ConversionError(f"{op}: input must be int8 or uint8, got {dtype}")
        opset = int(attr.get("opset", 13))
        ndim = len(x.ty.shape.values)
        axis = int(attr.get("axis", -1 if opset >= 13 else 1))
        axis = axis + ndim if axis < 0 else axis
        if opset < 13 and axis != ndim - 1:
            raise ConversionError(f"{op}: opset < 13 softmax over several axes is not supported")
        scales = [_constant(s) for s in (x_scale, y_scale)]
        if any(s is None or s.size != 1 for s in scales):
            raise ConversionError(f"{op}: scales must be constant scalars")
        sx, sy = (np.float32(s.reshape(())) for s in scales)
        reduce_len = x.ty.shape.values[axis]
        if not isinstance(reduce_len, tirx.IntImm):
            raise ConversionError(f"{op}: the softmax axis needs a static size, got {x.ty.shape}")
        table = softmax_table(sx, int(reduce_len.value))
        out_scale = np.float32(math.floor(np.float32(1.0) / sy))
        if not np.isfinite(table[0] * out_scale):
            # onnxruntime's float32 e_i * floor(1 / s_y) overflows: its result is undefined
            raise ConversionError(f"{op}: softmax of {int(reduce_len.value)} values with output scale {sy} "
                                  "overflows onnxruntime's kernel")
        zero = _zero_point(y_zp, op, "y_zero_point")
        qmax = 127 if dtype == "int8" else 255
        perm = None
        if axis != ndim - 1:
            perm = [i for i in range(ndim) if i != axis] + [axis]
            x = bb.normalize(relax.op.permute_dims(x, perm))
        wide = relax.op.astype(x, "int32")
        k = relax.op.subtract(relax.op.max(wide, axis=-1, keepdims=True), wide)
        e = bb.normalize(relax.op.take(relax.const(table), k, axis=0))
        total = relax.op.sum(e, axis=-1, keepdims=True)  # a serial float32 loop, as onnxruntime adds
        ratio = relax.op.divide(relax.op.multiply(e, relax.const(out_scale)), total)
        q = relax.op.add(relax.op.astype(relax.op.round(ratio), "int32"), relax.const(zero, "int32"))
        y = relax.op.astype(relax.op.minimum(q, relax.const(qmax, "int32")), dtype)
        if perm is not None:
            y = relax.op.permute_dims(y, [perm.index(i) for i in range(ndim)])
        return y


# ---------------------------------------------------------------------------- layer norm
class SkipLayerNormalization(OnnxOpConverter):
    """com.microsoft.SkipLayerNormalization: LayerNorm(input + skip (+ bias)); outputs
    (y, mean, inv_std_dev, input + skip + bias) -- mean and inv_std_dev not computed."""

    @classmethod
    def _impl_v1(cls, bb, inputs, attr, params):
        data, skip, gamma = inputs[0], inputs[1], inputs[2]
        beta = inputs[3] if len(inputs) > 3 else None
        bias = inputs[4] if len(inputs) > 4 else None
        total = relax.op.add(data, skip)
        if bias is not None:
            total = relax.op.add(total, bias)
        total = bb.normalize(total)
        if beta is None:
            beta = relax.const(np.zeros(int(gamma.ty.shape.values[-1]), np.float32))
        y = relax.op.nn.layer_norm(total, gamma, beta, axes=-1, epsilon=float(attr.get("epsilon", 1e-12)))
        placeholder = relax.const(0, "float32")
        return relax.Tuple([y, placeholder, placeholder, total])


# ---------------------------------------------------------------------------- GELU, matmul
class BiasGelu(OnnxOpConverter):
    """com.microsoft.BiasGelu, in onnxruntime's operation order (module docstring)."""

    @classmethod
    def _impl_v1(cls, bb, inputs, attr, params):
        v = relax.op.add(inputs[0], inputs[1])
        inv_sqrt2 = np.float32(1.0) / np.float32(math.sqrt(2.0))
        erf = relax.op.erf(relax.op.multiply(v, relax.const(inv_sqrt2)))
        half = relax.op.multiply(v, relax.const(np.float32(0.5)))
        return relax.op.multiply(half, relax.op.add(erf, relax.const(np.float32(1.0))))


class FusedMatMul(OnnxOpConverter):
    """com.microsoft.FusedMatMul: alpha * op(A) @ op(B) (transA / transB of the last two axes)."""

    @classmethod
    def _impl_v1(cls, bb, inputs, attr, params):
        if int(attr.get("transBatchA", 0)) or int(attr.get("transBatchB", 0)):
            raise ConversionError("FusedMatMul: transBatchA / transBatchB are not supported")
        a, b = inputs[0], inputs[1]
        if int(attr.get("transA", 0)):
            a = relax.op.permute_dims(a, _swap_last(len(a.ty.shape.values)))
        if int(attr.get("transB", 0)):
            b = relax.op.permute_dims(b, _swap_last(len(b.ty.shape.values)))
        y = relax.op.matmul(a, b)
        alpha = float(attr.get("alpha", 1.0))
        return y if alpha == 1.0 else relax.op.multiply(y, relax.const(np.float32(alpha)))


def _swap_last(ndim: int) -> list[int]:
    return list(range(ndim - 2)) + [ndim - 1, ndim - 2]


# ---------------------------------------------------------------------------- QGemm
class QGemm(OnnxOpConverter):
    """com.microsoft.QGemm (module docstring): the integer matmul of `converters`, then
    onnxruntime's requantization."""

    @classmethod
    def _impl_v1(cls, bb, inputs, attr, params):
        a, a_scale, a_zp, b, b_scale, b_zp, c, y_scale, y_zp = (inputs[i] if i < len(inputs) else None
                                                                 for i in range(9))
        op = "QGemm"
        if (y_scale is None) != (y_zp is None):
            raise ConversionError(f"{op}: y_scale and y_zero_point must be given together")
        if int(attr.get("transA", 0)):
            a = bb.normalize(relax.op.permute_dims(a, [1, 0]))
        if int(attr.get("transB", 0)):
            weight = _constant(b)
            # a constant B stays a constant, so MatMulInteger takes the packed dot kernel
            b = (relax.const(np.ascontiguousarray(weight.T)) if weight is not None
                 else bb.normalize(relax.op.permute_dims(b, [1, 0])))
        acc = bb.normalize(MatMulInteger._impl_v10(bb, [a, b, a_zp, b_zp], attr, params))
        if c is not None:
            acc = bb.normalize(relax.op.add(acc, c))
        alpha = np.float32(attr.get("alpha", 1.0))
        if alpha != 1:
            scale = _constant(a_scale)
            if scale is None:
                raise ConversionError(f"{op}: scales must be constants")
            # onnxruntime's scale is (alpha * s_a) * s_b[j], each product rounded to float32
            a_scale = relax.const(np.float32(alpha * np.float32(scale.reshape(()))))
        return requantize(bb, acc, None, a_scale, b_scale, y_scale, y_zp, 1, op)


#: op type -> converter (`frontend.CONVERTERS`), one for each com.microsoft op of `ort_fusions.FUSED`.
CONVERTERS = {
    "QLinearSoftmax": QLinearSoftmax,
    "SkipLayerNormalization": SkipLayerNormalization,
    "BiasGelu": BiasGelu,
    "FusedMatMul": FusedMatMul,
    "QGemm": QGemm,
}
