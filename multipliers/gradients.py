"""Gradient tables of a multiplier for retraining: the backward pass of sum_k M(a_k, w_k).

The backward pass of an accumulation acc = sum_k M(a_k, w_k) needs dM/da(a, w) and dM/dw(a, w).
Both estimators here replace them by two 1-D tables (256 entries, indexed by operand + 128), so
the backward pass is that of an exact convolution / matmul on mapped operands (same cost as the
straight-through estimator):

    dM/da(a, w) ~ d_a[w]      grad_a = conv_input_grad(g, d_a[w])   (matmul: g @ d_a[w]^T)
    dM/dw(a, w) ~ d_w[a]      grad_w = conv_weight_grad(d_w[a], g)  (matmul: d_w[a]^T @ g)

"ste": the gradient of the product the forward pass differentiates today
(`multipliers.torch_kernels`): for an exact decomposition sum_t c_t (a & ma_t)(w & mb_t), the main
term's, d_a[w] = c_0 (w & mb_0), d_w[a] = c_0 (a & ma_0) (masks passed straight through); otherwise,
and for the exact multiplier, the exact product's, d_a[w] = w, d_w[a] = a.

"lut" (LUT-1D style, after Meng, Burleson, De Micheli, arXiv 2509.10519, whose abstract only
could be read offline; the smoothing below is ours): finite differences of the LUT along one
operand, averaged over that operand with a triangular window,

    D_a(a, w) = dM/da by numpy.gradient along a: (M(a+1, w) - M(a-1, w)) / 2 for -128 < a < 127,
                one-sided M(-127, w) - M(-128, w) and M(127, w) - M(126, w) at the ends
    d_a[w]    = sum_a h(a) D_a(a, w) / sum_a h(a),      h(a) = 128.5 - |a + 0.5|  (1 ... 128 ... 1)
    d_w[a]    = sum_w h(w) D_w(a, w) / sum_w h(w)       (D_w likewise along w)

Why a window: the uniform mean of central differences telescopes to the four entries at the
ends of the row (sum_a D_a = (3 M(127) - M(126) + M(-127) - 3 M(-128)) / 2), so a few boundary
entries would decide the gradient; with h the sum is, by parts, a weighted slope over every
entry of the row. `window="uniform"` gives that plain mean. For the exact multiplier D_a = w at
every a, and with integer h the weighted sums are exact in float64, so d_a[w] = w and d_w[a] = a
bit for bit, the "ste" tables.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from multipliers.lut import apply_mask
from multipliers.multiplier import Multiplier

GRADIENTS = ("ste", "lut")
WINDOWS = ("triangle", "uniform")
_OPERANDS = np.arange(-128, 128, dtype=np.int64)


@dataclass(frozen=True, eq=False)
class GradientTables:
    """The two 1-D tables of one multiplier (float64, 256 entries, index = operand + 128)."""

    d_a: np.ndarray  # d_a[w + 128] ~ dM/da(., w): maps the weight operand for grad_a
    d_w: np.ndarray  # d_w[a + 128] ~ dM/dw(a, .): maps the activation operand for grad_w

    @property
    def identity(self) -> bool:
        """True when both tables are the identity (the exact product's gradient)."""
        return bool(np.array_equal(self.d_a, _OPERANDS) and np.array_equal(self.d_w, _OPERANDS))


def ste_tables(mult: Multiplier | None) -> GradientTables:
    """Tables of the straight-through estimator (see module docstring)."""
    ops = _OPERANDS.astype(np.float64)
    if mult is None or mult.is_exact or not mult.decomposition.exact:
        return GradientTables(ops, ops.copy())
    main = mult.decomposition.terms[0]
    return GradientTables(main.coef * apply_mask(_OPERANDS, main.mask_b).astype(np.float64),
                          main.coef * apply_mask(_OPERANDS, main.mask_a).astype(np.float64))


def _window(kind: str) -> np.ndarray:
    if kind == "triangle":
        return 128.5 - np.abs(_OPERANDS + 0.5)
    if kind == "uniform":
        return np.ones(256)
    raise ValueError(f"window must be one of {', '.join(WINDOWS)}, got {kind!r}")


def lut_tables(mult: Multiplier | None, window: str = "triangle") -> GradientTables:
    """LUT-1D tables from windowed central differences of the LUT (see module docstring)."""
    h = _window(window)
    if mult is None:
        lut = _OPERANDS[:, None] * _OPERANDS[None, :]
    else:
        lut = mult.lut.astype(np.int64)
    lut = lut.astype(np.float64)  # rows: a + 128, columns: w + 128
    d_da = np.gradient(lut, axis=0)  # dM/da(a, w)
    d_dw = np.gradient(lut, axis=1)  # dM/dw(a, w)
    d_a = (h[:, None] * d_da).sum(axis=0) / h.sum()  # function of w
    d_w = (d_dw * h[None, :]).sum(axis=1) / h.sum()  # function of a
    return GradientTables(d_a, d_w)


_TABLES: dict[tuple[str, str], GradientTables] = {}


def gradient_tables(mult: Multiplier | None, gradient: str) -> GradientTables:
    """The tables of estimator `gradient` ("ste" or "lut") for `mult` (None: exact), computed once
    per LUT."""
    if gradient not in GRADIENTS:
        raise ValueError(f"gradient must be one of {', '.join(GRADIENTS)}, got {gradient!r}")
    key = (mult.sha256 if mult is not None else "exact", gradient)
    if key not in _TABLES:
        _TABLES[key] = ste_tables(mult) if gradient == "ste" else lut_tables(mult)
    return _TABLES[key]
