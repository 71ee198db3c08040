"""numpy reference kernels: the oracle every backend (ORT, TVM, torch) is tested against.

Semantics follow ONNX MatMulInteger / ConvInteger with zero points already removed:
operands are signed 8-bit values (`a = q - zero_point`), every product is a multiplier
lookup `lut[a + 128, b + 128]` (a from the activation / left matrix, b from the weight /
right matrix), accumulation is int32 with two's-complement wrap-around.

    lut_matmul:    Y[..., m, n] = sum_k lut[A[..., m, k], B[..., k, n]]
    lut_conv:      Y[n, g*Mg + m, p] = sum_{c, r} lut[Xpad[n, g*Cg + c, p*s + r*d], W[g*Mg + m, c, r]]

The `decomposed_*` twins compute the same thing from an exact decomposition
(sum of coef * exact products of masked operands) and must agree bit for bit.
Simplicity over speed: these are references, chunked only to bound memory.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from multipliers.decompose import Decomposition
from multipliers.lut import apply_mask

_CHUNK_ELEMENTS = 1 << 22  # bound on the (rows, K, N) gather buffer


def wrap_int32(x: np.ndarray) -> np.ndarray:
    """int64 -> int32 with two's-complement wrap-around, as int32 accumulators behave."""
    return ((np.asarray(x, dtype=np.int64) + (1 << 31)) % (1 << 32) - (1 << 31)).astype(np.int32)


def _check_int8(name: str, x: np.ndarray) -> np.ndarray:
    x = np.asarray(x)
    if x.dtype.kind not in "iu":
        raise TypeError(f"{name} must hold integers, got {x.dtype}")
    x = x.astype(np.int64)
    if x.size and (x.min() < -128 or x.max() > 127):
        raise ValueError(f"{name} must hold signed 8-bit values (q - zero_point) in [-128, 127]")
    return x


def _matmul_2d(a: np.ndarray, b: np.ndarray, lut: np.ndarray) -> np.ndarray:
    m, k = a.shape
    n = b.shape[1]
    out = np.empty((m, n), dtype=np.int64)
    rows = max(1, _CHUNK_ELEMENTS // max(1, k * n))
    table = lut.astype(np.int64)
    for start in range(0, m, rows):
        block = a[start:start + rows, :, None] + 128  # (r, K, 1)
        out[start:start + rows] = table[block, b[None, :, :] + 128].sum(axis=1)
    return out


def _batched(fn2d, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Apply a 2-D matmul over numpy-broadcast leading dims (ONNX MatMul semantics, ndim >= 2)."""
    squeeze_a, squeeze_b = a.ndim == 1, b.ndim == 1
    if squeeze_a:
        a = a[None, :]
    if squeeze_b:
        b = b[:, None]
    if a.shape[-1] != b.shape[-2]:
        raise ValueError(f"matmul shapes {a.shape} and {b.shape} do not align")
    batch = np.broadcast_shapes(a.shape[:-2], b.shape[:-2])
    a = np.broadcast_to(a, batch + a.shape[-2:])
    b = np.broadcast_to(b, batch + b.shape[-2:])
    out = np.empty(batch + (a.shape[-2], b.shape[-1]), dtype=np.int64)
    for idx in np.ndindex(*batch):
        out[idx] = fn2d(a[idx], b[idx])
    if squeeze_a:
        out = out[..., 0, :]
    if squeeze_b:
        out = out[..., 0]
    return out


def lut_matmul(a: np.ndarray, b: np.ndarray, lut: np.ndarray) -> np.ndarray:
    """Approximate A @ B (numpy matmul broadcasting) -> int32.

    Args:
        a: (..., M, K) signed 8-bit values (left operand, indexes LUT rows).
        b: (..., K, N) signed 8-bit values (right operand, indexes LUT columns).
        lut: int32 (256, 256).
    """
    a, b = _check_int8("A", a), _check_int8("B", b)
    return wrap_int32(_batched(lambda x, y: _matmul_2d(x, y, lut), a, b))


def decomposed_matmul(a: np.ndarray, b: np.ndarray, decomposition: Decomposition) -> np.ndarray:
    """Same as `lut_matmul`, from an exact decomposition: sum_t c_t (A & ma_t) @ (B & mb_t)."""
    a, b = _check_int8("A", a), _check_int8("B", b)
    if not decomposition.exact:
        raise ValueError(f"no exact decomposition: {decomposition.reason}")
    total = 0
    for t in decomposition.terms:
        total = total + t.coef * _batched(np.matmul, apply_mask(a, t.mask_a), apply_mask(b, t.mask_b))
    return wrap_int32(total)


# ---------------------------------------------------------------------------------- conv
def _conv_geometry(x, w, strides, pads, dilations, group):
    spatial = x.ndim - 2
    if spatial not in (1, 2) or w.ndim != x.ndim:
        raise ValueError(f"conv expects (N, C, L) or (N, C, H, W) inputs with matching weights, "
                         f"got {x.shape} and {w.shape}")
    strides = tuple(strides or (1,) * spatial)
    dilations = tuple(dilations or (1,) * spatial)
    pads = tuple(pads or (0,) * (2 * spatial))
    if len(strides) != spatial or len(dilations) != spatial or len(pads) != 2 * spatial:
        raise ValueError("strides/dilations need one value per spatial dim, pads two")
    c, m = x.shape[1], w.shape[0]
    if c % group or m % group or w.shape[1] != c // group:
        raise ValueError(f"group={group} does not fit {c} input / {m} output channels "
                         f"(weight shape {w.shape})")
    return strides, pads, dilations


def _im2col(x: np.ndarray, kernel: Sequence[int], strides, pads, dilations) -> tuple[np.ndarray, tuple]:
    """(N, C, *S) -> columns (N, P, C * prod(kernel)) with P output positions; padding is a = 0
    (ConvInteger pads with the zero point), so padded taps still go through the multiplier."""
    spatial = x.ndim - 2
    pad_width = [(0, 0), (0, 0)] + [(pads[i], pads[i + spatial]) for i in range(spatial)]
    xp = np.pad(x, pad_width)
    out_shape = tuple((xp.shape[2 + i] - dilations[i] * (kernel[i] - 1) - 1) // strides[i] + 1
                      for i in range(spatial))
    if min(out_shape) <= 0:
        raise ValueError(f"kernel {tuple(kernel)} does not fit input {x.shape[2:]} with pads {pads}")
    taps = []
    for offsets in np.ndindex(*kernel):
        index = tuple(slice(offsets[i] * dilations[i],
                            offsets[i] * dilations[i] + strides[i] * (out_shape[i] - 1) + 1,
                            strides[i]) for i in range(spatial))
        taps.append(xp[(slice(None), slice(None)) + index])  # (N, C, *out)
    cols = np.stack(taps, axis=2)  # (N, C, taps, *out)
    n, c = x.shape[:2]
    cols = cols.reshape(n, c * len(taps), int(np.prod(out_shape))).transpose(0, 2, 1)  # (N, P, C*taps)
    return cols, out_shape


def _conv(x, w, strides, pads, dilations, group, matmul2d) -> np.ndarray:
    strides, pads, dilations = _conv_geometry(x, w, strides, pads, dilations, group)
    n, c = x.shape[:2]
    m = w.shape[0]
    cg, mg = c // group, m // group
    outs = []
    for g in range(group):
        cols, out_shape = _im2col(x[:, g * cg:(g + 1) * cg], w.shape[2:], strides, pads, dilations)
        wmat = w[g * mg:(g + 1) * mg].reshape(mg, -1).T  # (Cg*taps, Mg)
        y = np.stack([matmul2d(cols[i], wmat) for i in range(n)]) if n else \
            np.zeros((0, cols.shape[1], mg), dtype=np.int64)  # (N, P, Mg)
        outs.append(y.transpose(0, 2, 1))
    return np.concatenate(outs, axis=1).reshape((n, m) + out_shape)


def lut_conv(x: np.ndarray, w: np.ndarray, lut: np.ndarray, *, strides=None, pads=None,
             dilations=None, group: int = 1) -> np.ndarray:
    """Approximate ConvInteger (1-D or 2-D, NC[H]W) -> int32.

    Args:
        x: (N, C, L) or (N, C, H, W) signed 8-bit activations (LUT rows).
        w: (M, C / group, kL) or (M, C / group, kH, kW) signed 8-bit weights (LUT columns).
        lut: int32 (256, 256).
        strides, pads, dilations, group: as ONNX Conv; pads = [begin..., end...].
    """
    x, w = _check_int8("X", x), _check_int8("W", w)
    return wrap_int32(_conv(x, w, strides, pads, dilations, group,
                            lambda cols, wmat: _matmul_2d(cols, wmat, lut)))


def decomposed_conv(x: np.ndarray, w: np.ndarray, decomposition: Decomposition, *, strides=None,
                    pads=None, dilations=None, group: int = 1) -> np.ndarray:
    """Same as `lut_conv`, from an exact decomposition: sum_t c_t conv(X & ma_t, W & mb_t)."""
    x, w = _check_int8("X", x), _check_int8("W", w)
    if not decomposition.exact:
        raise ValueError(f"no exact decomposition: {decomposition.reason}")
    total = 0
    for t in decomposition.terms:
        total = total + t.coef * _conv(apply_mask(x, t.mask_a), apply_mask(w, t.mask_b),
                                       strides, pads, dilations, group, np.matmul)
    return wrap_int32(total)
