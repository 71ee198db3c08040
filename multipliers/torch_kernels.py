"""PyTorch twins of the oracle kernels, for emulation and approximate-aware retraining.

Operands are float tensors holding exact 8-bit integers (a = x_q - zp, w_q); results hold the
exact int32 accumulations (float32 when K * max|product| <= 2^24 makes that exact, else float64;
`exact_dtype`):

    exact:       acc = conv(a, w)
    decomposed:  acc = sum_t c_t conv(a & ma_t, w & mb_t)        (multipliers.decompose; the
                 corrections t >= 1 as one convolution on operands stacked along channels)
    lut:         acc[n, m, l] = sum_k LUT[a[n, k, l] + 128, w[m, k] + 128]   (im2col + gather)

Backward (`gradient=`, tables in `multipliers.gradients`):

    "ste": the straight-through estimator of the exact product: the gradient of conv(a, w) (for
           `decomposed`, of the main term on masked operands; the corrections and the LUT's
           difference to the exact product are constants of the backward pass).
    "lut": LUT-1D tables d_a (of w) and d_w (of a): grad_a = conv_input_grad(g, d_a[w]),
           grad_w = conv_weight_grad(d_w[a], g) (matmul: g @ d_a[w]^T, d_w[a]^T @ g), the forward
           pass run without autograd.

`conv_with_table_gradient` / `matmul_with_table_gradient` attach that backward to any forward
(the C++ kernels of `export.kernel_products` use them too).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from torch.nn import functional as F

from multipliers.gradients import GRADIENTS, GradientTables, gradient_tables
from multipliers.lut import apply_mask, signed_mask
from multipliers.multiplier import Multiplier

_GATHER_CHUNK = 1 << 24  # elements of one gather block


def exact_dtype(k: int, max_product: int = 1 << 14) -> torch.dtype:
    """dtype whose sums of k products of magnitude <= max_product are exact (float32 while
    k * max_product <= 2^24; 2^14 = 128 * 128 bounds exact 8-bit products)."""
    return torch.float32 if k * max_product <= 1 << 24 else torch.float64


def product_bound(mult: Multiplier | None) -> int:
    """max |product| of a multiplier: 2^14 for exact products, max |LUT| otherwise (e.g. DRUM's
    rounding up reaches 20736)."""
    return 1 << 14 if mult is None else max(1 << 14, int(np.abs(mult.lut).max()))


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


def _symmetric(p: ConvParams) -> bool:
    return tuple(p.pads[:p.spatial]) == tuple(p.pads[p.spatial:])


def _conv(x: torch.Tensor, w: torch.Tensor, p: ConvParams) -> torch.Tensor:
    fn = {1: F.conv1d, 2: F.conv2d}[p.spatial]
    if _symmetric(p):  # the convolution pads (no padded copy in the forward, no slice in the backward)
        return fn(x, w, None, p.strides, p.pads[:p.spatial], p.dilations, p.group)
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
    """x & mask for integer-valued floats in [-128, 127] (two's complement, bit 7 = -128), through
    int32 (a float formulation with remainders ran ~5x slower on CPU)."""
    if mask == 0xFF:
        return x
    return (x.to(torch.int32) & signed_mask(mask)).to(x.dtype)


def mask_ste(x: torch.Tensor, mask: int) -> torch.Tensor:
    """x & mask on integer-valued floats (two's complement, bit 7 = -128), identity gradient."""
    if mask == 0xFF:
        return x
    return _StraightThrough.apply(x, lambda v: _masked(v, mask))


class _QuantizeSTE(torch.autograd.Function):
    """y = clamp(round_half_even(x), low, high); dy/dx = 1 where low <= round(x) <= high, else 0."""

    @staticmethod
    def forward(ctx, x, low, high):
        rounded = torch.round(x)
        out = rounded.clamp(low, high)
        if ctx.needs_input_grad[0]:
            ctx.save_for_backward(out == rounded)
        return out

    @staticmethod
    def backward(ctx, grad):
        (inside,) = ctx.saved_tensors
        return grad * inside, None, None


def quantize_ste(x: torch.Tensor, low: int, high: int) -> torch.Tensor:
    """clamp(round_half_even(x), low, high) with the clipped straight-through gradient: the values
    and gradients of torch.fake_quantize_per_tensor_affine(x, 1.0, 0, low, high) (which gates the
    gradient on the rounded value too), in a third to a half of its CPU time."""
    return _QuantizeSTE.apply(x, low, high)


def _decomposed(fn, a, w, mult: Multiplier, layout: str | None = None, group: int = 1):
    """sum_t c_t fn(a & ma_t, w & mb_t), the corrections (t >= 1) without gradient and, for
    `layout` "conv" or "matmul", summed by one fn call on stacked operands (`_stacked`) when that
    sum provably stays exact (|acc| < 2^24 in float32)."""
    terms = mult.decomposition.terms
    main = terms[0]
    acc = main.coef * fn(mask_ste(a, main.mask_a), mask_ste(w, main.mask_b))
    if len(terms) > 1:
        corrections = terms[1:]
        with torch.no_grad():
            k = w.shape[0] if layout == "matmul" else int(np.prod(w.shape[1:]))
            bound = k * sum(abs(t.coef) * _mask_max(t.mask_a) * _mask_max(t.mask_b) for t in corrections)
            if layout is not None and (a.dtype == torch.float64 or bound < 1 << 24):
                correction = fn(*_stacked(a, w, corrections, layout, group))
            else:
                correction = sum(t.coef * fn(_masked(a, t.mask_a), _masked(w, t.mask_b)) for t in corrections)
        acc = acc + correction
    return acc


@functools.lru_cache(maxsize=None)
def _mask_max(mask: int) -> int:
    """max |x & mask| over int8 x."""
    return int(np.abs(apply_mask(np.arange(-128, 128), mask)).max())


def _stacked(a: torch.Tensor, w: torch.Tensor, terms, layout: str, group: int):
    """Operands of one call that sums c_t fn(a & ma_t, w & mb_t) over `terms`: the masked copies
    side by side along the reduced axis (per group for a convolution), K' = len(terms) * K.

    conv:   a (N, C, *S) -> (N, G * T * Cg, *S) ordered [g][t][c]; w (M, Cg, *k) -> (M, T * Cg, *k)
    matmul: a (..., K) -> (..., T * K); w (K, M) -> (T * K, M)
    """
    t = len(terms)
    ma = torch.tensor([signed_mask(x.mask_a) for x in terms], dtype=torch.int32, device=a.device)
    mb = torch.tensor([signed_mask(x.mask_b) for x in terms], dtype=torch.int32, device=a.device)
    coef = torch.tensor([x.coef for x in terms], dtype=w.dtype, device=w.device)
    if layout == "matmul":
        at = (a.to(torch.int32).unsqueeze(-2) & ma[:, None]).to(a.dtype)  # (..., T, K)
        wt = (w.to(torch.int32).unsqueeze(0) & mb[:, None, None]).to(w.dtype) * coef[:, None, None]  # (T, K, M)
        return at.reshape(*a.shape[:-1], t * a.shape[-1]), wt.reshape(t * w.shape[0], w.shape[1])
    ones = (1,) * (a.ndim - 2)
    n, c = a.shape[:2]
    at = (a.to(torch.int32).unsqueeze(1) & ma.view(1, t, 1, *ones)).to(a.dtype)  # (N, T, C, *S)
    if group > 1:
        at = at.reshape(n, t, group, c // group, *a.shape[2:]).transpose(1, 2)
    at = at.reshape(n, t * c, *a.shape[2:])
    view = (1, t, 1) + ones
    wt = (w.to(torch.int32).unsqueeze(1) & mb.view(view)).to(w.dtype) * coef.view(view)  # (M, T, Cg, *k)
    return at, wt.reshape(w.shape[0], t * w.shape[1], *w.shape[2:])


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


def _check_gradient(gradient: str) -> None:
    if gradient not in GRADIENTS:
        raise ValueError(f"gradient must be one of {', '.join(GRADIENTS)}, got {gradient!r}")


def conv_products(a: torch.Tensor, w: torch.Tensor, p: ConvParams, mult: Multiplier | None = None,
                  method: str = "auto", gradient: str = "ste") -> torch.Tensor:
    """Integer accumulations of an (approximate) convolution, see module docstring.

    Args:
        a: (N, C, *S) activations; w: (M, C / group, *k) weights; both integer-valued floats.
        mult: the multiplier (None or exact: exact products).
        method: "auto" (decomposed when the LUT decomposes, else lut), "decomposed", "lut".
        gradient: "ste" or "lut" (see module docstring).
    Returns:
        (N, M, *OS) exact accumulations in `exact_dtype(K, product_bound(mult))`, K = C / group * prod(k).
    """
    _check_gradient(gradient)
    dtype = exact_dtype(int(np.prod(w.shape[1:])), product_bound(mult))
    a, w = a.to(dtype), w.to(dtype)
    if mult is None or mult.is_exact:
        return _conv(a, w, p)
    decomposed = _decomposes(mult, method)

    def products(x, y):  # the approximate products, forward only
        if decomposed:
            return _decomposed(lambda u, v: _conv(u, v, p), x, y, mult, "conv", p.group)
        return _lut_conv(x, y, p, _lut_tensor(mult, x.device, dtype))

    if gradient == "lut":
        return conv_with_table_gradient(products, a, w, p, gradient_tables(mult, gradient))
    if decomposed:
        return products(a, w)
    reference = _conv(a, w, p)
    with torch.no_grad():
        approx = products(a, w)
    return reference + (approx - reference).detach()


def _decomposes(mult: Multiplier, method: str) -> bool:
    """Whether the products of an approximate `mult` go through its decomposition."""
    return method in ("auto", "decomposed") and mult.decomposition.exact


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
                    method: str = "auto", gradient: str = "ste") -> torch.Tensor:
    """Integer accumulations of an (approximate) a @ w; a (..., K), w (K, M) -> (..., M) in
    `exact_dtype(K, product_bound(mult))`; `method` and `gradient` as `conv_products`."""
    _check_gradient(gradient)
    dtype = exact_dtype(int(w.shape[0]), product_bound(mult))
    a, w = a.to(dtype), w.to(dtype)
    if mult is None or mult.is_exact:
        return torch.matmul(a, w)
    decomposed = _decomposes(mult, method)

    def products(x, y):  # the approximate products, forward only
        if decomposed:
            return _decomposed(torch.matmul, x, y, mult, "matmul")
        flat = x.reshape(-1, x.shape[-1])
        return _gather_matmul(flat, y, _lut_tensor(mult, x.device, dtype)).reshape(*x.shape[:-1], y.shape[1])

    if gradient == "lut":
        return matmul_with_table_gradient(products, a, w, gradient_tables(mult, gradient))
    if decomposed:
        return products(a, w)
    reference = torch.matmul(a, w)
    with torch.no_grad():
        approx = products(a, w)
    return reference + (approx - reference).detach()


# ------------------------------------------------------------------ table gradients
_OPERAND_TABLES: dict[tuple, tuple] = {}


def _torch_tables(tables: GradientTables, dtype, device) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """(d_a, d_w) as tensors, None for an identity table (the operand itself)."""
    key = (id(tables), dtype, str(device))
    if key not in _OPERAND_TABLES:
        identity = np.arange(-128, 128, dtype=np.float64)
        _OPERAND_TABLES[key] = tuple(
            None if np.array_equal(t, identity) else torch.tensor(t, dtype=dtype, device=device)
            for t in (tables.d_a, tables.d_w)) + (tables,)  # the reference keeps id(tables) unique
    return _OPERAND_TABLES[key][:2]


def map_operand(x: torch.Tensor, table: torch.Tensor | None) -> torch.Tensor:
    """table[x + 128] for integer-valued x in [-128, 127] (x itself for the identity, None)."""
    if table is None:
        return x
    return table[(x.to(torch.int64) + 128)]


class _TableGradient(torch.autograd.Function):
    """y = forward(a, w) without autograd; (grad_a, grad_w) = backward(g, a, w, needs)."""

    @staticmethod
    def forward(ctx, a, w, forward, backward):
        ctx.save_for_backward(a, w)
        ctx.backward_fn = backward
        return forward(a, w)

    @staticmethod
    def backward(ctx, grad):
        a, w = ctx.saved_tensors
        grad_a, grad_w = ctx.backward_fn(grad, a, w, ctx.needs_input_grad[0], ctx.needs_input_grad[1])
        return grad_a, grad_w, None, None


def conv_with_table_gradient(forward: Callable, a: torch.Tensor, w: torch.Tensor, p: ConvParams,
                             tables: GradientTables) -> torch.Tensor:
    """forward(a, w) (an (N, M, *OS) accumulation, run without autograd) whose backward is that of
    conv(d_w[a], d_a[w]): grad_a = conv_input_grad(g, d_a[w]), grad_w = conv_weight_grad(d_w[a], g).

    The pad's zero activations map to d_w[0]: when that is 0 and the pads are symmetric the
    convolution pads, else the input is padded explicitly (with d_w[0]) and the convolution runs
    unpadded, as `_conv` does, so identity tables give autograd's gradients of `_conv` bit for bit.
    """

    def backward(g, x, y, need_a, need_w):
        d_a, d_w = _torch_tables(tables, g.dtype, g.device)
        s = p.spatial
        xe = map_operand(x.to(g.dtype), d_w) if need_w else x.to(g.dtype)
        ye = map_operand(y.to(g.dtype), d_a)
        fill = float(tables.d_w[128]) if need_w else 0.0
        inner = _symmetric(p) and fill == 0.0
        if not inner:
            xe = _pad_value(xe, p, fill)
        grad_x, grad_y, _ = torch.ops.aten.convolution_backward(
            g, xe, ye, None, list(p.strides), list(p.pads[:s]) if inner else [0] * s, list(p.dilations), False,
            [0] * s, p.group, [need_a, need_w, False])
        if need_a and not inner and any(p.pads):
            index = (slice(None), slice(None)) + tuple(
                slice(p.pads[i], grad_x.shape[2 + i] - p.pads[i + s]) for i in range(s))
            grad_x = grad_x[index]
        return grad_x, grad_y

    return _TableGradient.apply(a, w, forward, backward)


def _pad_value(x: torch.Tensor, p: ConvParams, value: float) -> torch.Tensor:
    s = p.spatial
    if all(v == 0 for v in p.pads):
        return x
    pad = [v for i in reversed(range(s)) for v in (p.pads[i], p.pads[i + s])]
    return F.pad(x, pad, value=value)


def matmul_with_table_gradient(forward: Callable, a: torch.Tensor, w: torch.Tensor,
                               tables: GradientTables) -> torch.Tensor:
    """forward(a, w) (a (..., K) @ (K, M) accumulation, run without autograd) whose backward is
    grad_a = g @ d_a[w]^T, grad_w = d_w[a]^T @ g (batch dims of a summed)."""

    def backward(g, x, y, need_a, need_w):
        d_a, d_w = _torch_tables(tables, g.dtype, g.device)
        grad_x = torch.matmul(g, map_operand(y.to(g.dtype), d_a).t()) if need_a else None
        grad_y = None
        if need_w:
            xe = map_operand(x.to(g.dtype), d_w)
            grad_y = xe.reshape(-1, xe.shape[-1]).t() @ g.reshape(-1, g.shape[-1])
        return grad_x, grad_y

    return _TableGradient.apply(a, w, forward, backward)
