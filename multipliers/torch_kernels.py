"""PyTorch twins of the oracle kernels, for emulation and approximate-aware retraining.

Operands are float tensors holding exact 8-bit integers (a = x_q - zp, w_q); results hold the
exact int32 accumulations (float32 when K * 2^14 < 2^24 makes that exact, else float64):

    exact:       acc = conv(a, w)
    decomposed:  acc = sum_t c_t conv(a & ma_t, w & mb_t)        (multipliers.decompose)
    lut:         acc[n, m, l] = sum_k LUT[a[n, k, l] + 128, w[m, k] + 128]   (im2col + gather)

Backward is the straight-through estimator of the exact product: the gradient of
conv(a, w) (for `decomposed`, of the main term on masked operands; the corrections and the
LUT's difference to the exact product are constants of the backward pass).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch.nn import functional as F

from multipliers.lut import bit_runs
from multipliers.multiplier import Multiplier

_FLOAT32_EXACT_K = 1 << 10
_GATHER_CHUNK = 1 << 24  # elements of one gather block


def exact_dtype(k: int) -> torch.dtype:
    """dtype whose sums of k products of 8-bit integers are exact."""
    return torch.float32 if k < _FLOAT32_EXACT_K else torch.float64


@dataclass(frozen=True)
class ConvParams:
    strides: tuple[int, ...]
    pads: tuple[int, ...]  # ONNX order: begins then ends
    dilations: tuple[int, ...]
    group: int = 1

    @property
    def spatial(self) -> int:
        return len(self.strides)


def _pad(x: torch.Tensor, p: ConvParams) -> torch.Tensor:
    s = p.spatial
    if all(v == 0 for v in p.pads):
        return x
    pad = [v for i in reversed(range(s)) for v in (p.pads[i], p.pads[i + s])]
    return F.pad(x, pad)  # zeros: the activation a = 0 that ConvInteger pads with


def _conv(x: torch.Tensor, w: torch.Tensor, p: ConvParams) -> torch.Tensor:
    fn = {1: F.conv1d, 2: F.conv2d}[p.spatial]
    return fn(_pad(x, p), w, None, p.strides, 0, p.dilations, p.group)


class _StraightThrough(torch.autograd.Function):
    """y = fn(x) in the forward pass, dy/dx = 1 in the backward pass."""

    @staticmethod
    def forward(ctx, x, fn):
        return fn(x)

    @staticmethod
    def backward(ctx, grad):
        return grad, None


def _masked(x: torch.Tensor, mask: int) -> torch.Tensor:
    """x & mask for integer-valued floats in [-128, 127], with float ops only: for a run of bits
    [lo, hi), the bits of x there are (x mod 2^hi) - (x mod 2^lo) (floor modulo, which is the
    two's-complement low part), and a run that reaches bit 7 is x - (x mod 2^lo)."""
    out = None
    for lo, length in bit_runs(mask):
        hi = lo + length
        low = torch.remainder(x, float(1 << lo)) if lo else 0.0
        high = x if hi == 8 else torch.remainder(x, float(1 << hi))
        part = high - low
        out = part if out is None else out + part
    return out if out is not None else torch.zeros_like(x)


def mask_ste(x: torch.Tensor, mask: int) -> torch.Tensor:
    """x & mask on integer-valued floats (two's complement, bit 7 = -128), identity gradient."""
    if mask == 0xFF:
        return x
    return _StraightThrough.apply(x, lambda v: _masked(v, mask))


def quantize_ste(x: torch.Tensor, low: int, high: int) -> torch.Tensor:
    """clamp(round_half_even(x), low, high) with the clipped straight-through gradient, as one
    fused op (fake quantization at scale 1 and zero point 0 returns exactly these integers)."""
    return torch.fake_quantize_per_tensor_affine(x, 1.0, 0, low, high)


def _decomposed(fn, a, w, mult: Multiplier):
    terms = mult.decomposition.terms
    main = terms[0]
    acc = main.coef * fn(mask_ste(a, main.mask_a), mask_ste(w, main.mask_b))
    if len(terms) > 1:
        with torch.no_grad():
            correction = sum(t.coef * fn(mask_ste(a, t.mask_a), mask_ste(w, t.mask_b)) for t in terms[1:])
        acc = acc + correction
    return acc


def _lut_tensor(mult: Multiplier, device, dtype) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(mult.lut.ravel())).to(device=device, dtype=dtype)


def _gather_matmul(a: torch.Tensor, w: torch.Tensor, lut: torch.Tensor) -> torch.Tensor:
    """a (R, K), w (K, M) integer-valued -> (R, M) sums of LUT entries."""
    r, k = a.shape
    m = w.shape[1]
    ia = (a.to(torch.int64) + 128) * 256
    iw = w.to(torch.int64) + 128
    out = torch.empty(r, m, dtype=lut.dtype, device=a.device)
    rows = max(1, _GATHER_CHUNK // max(1, k * m))
    for start in range(0, r, rows):
        block = ia[start:start + rows, :, None] + iw[None, :, :]  # (rows, K, M)
        out[start:start + rows] = lut[block].sum(dim=1)
    return out


def conv_products(a: torch.Tensor, w: torch.Tensor, p: ConvParams, mult: Multiplier | None = None,
                  method: str = "auto") -> torch.Tensor:
    """Integer accumulations of an (approximate) convolution, see module docstring.

    Args:
        a: (N, C, *S) activations; w: (M, C / group, *k) weights; both integer-valued floats.
        mult: the multiplier (None or exact: exact products).
        method: "auto" (decomposed when the LUT decomposes, else lut), "decomposed", "lut".
    """
    dtype = exact_dtype(int(np.prod(w.shape[1:])))
    a, w = a.to(dtype), w.to(dtype)
    if mult is None or mult.is_exact:
        return _conv(a, w, p)
    dec = mult.decomposition
    if method in ("auto", "decomposed") and dec.exact:
        return _decomposed(lambda x, y: _conv(x, y, p), a, w, mult)
    exact = _conv(a, w, p)
    with torch.no_grad():
        approx = _lut_conv(a, w, p, _lut_tensor(mult, a.device, dtype))
    return exact + (approx - exact).detach()


def _lut_conv(a, w, p: ConvParams, lut: torch.Tensor) -> torch.Tensor:
    x = _pad(a, p)
    if p.spatial == 1:
        x, w = x[:, :, None, :], w[:, :, None, :]
        strides, dilations = (1,) + tuple(p.strides), (1,) + tuple(p.dilations)
    else:
        strides, dilations = tuple(p.strides), tuple(p.dilations)
    n, c = x.shape[:2]
    m = w.shape[0]
    cg, mg = c // p.group, m // p.group
    kernel = w.shape[2:]
    oh = (x.shape[2] - dilations[0] * (kernel[0] - 1) - 1) // strides[0] + 1
    ow = (x.shape[3] - dilations[1] * (kernel[1] - 1) - 1) // strides[1] + 1
    outs = []
    for g in range(p.group):
        cols = F.unfold(x[:, g * cg:(g + 1) * cg], kernel, dilation=dilations, stride=strides)  # (N, K, L)
        rows = cols.transpose(1, 2).reshape(-1, cols.shape[1])  # (N*L, K)
        wg = w[g * mg:(g + 1) * mg].reshape(mg, -1).t()  # (K, Mg)
        outs.append(_gather_matmul(rows, wg, lut).reshape(n, oh * ow, mg).transpose(1, 2))
    out = torch.cat(outs, dim=1).reshape(n, m, oh, ow)
    return out[:, :, 0, :] if p.spatial == 1 else out


def matmul_products(a: torch.Tensor, w: torch.Tensor, mult: Multiplier | None = None,
                    method: str = "auto") -> torch.Tensor:
    """Integer accumulations of an (approximate) a @ w; a (..., K), w (K, M)."""
    dtype = exact_dtype(int(w.shape[0]))
    a, w = a.to(dtype), w.to(dtype)
    if mult is None or mult.is_exact:
        return torch.matmul(a, w)
    dec = mult.decomposition
    if method in ("auto", "decomposed") and dec.exact:
        return _decomposed(torch.matmul, a, w, mult)
    exact = torch.matmul(a, w)
    with torch.no_grad():
        flat = a.reshape(-1, a.shape[-1])
        approx = _gather_matmul(flat, w, _lut_tensor(mult, a.device, dtype)).reshape(exact.shape)
    return exact + (approx - exact).detach()
