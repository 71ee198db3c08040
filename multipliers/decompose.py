"""Exact decomposition of a LUT into a few products of bit-masked operands.

Any function of two int8 operands that is bilinear in their two's-complement bits,

    mul(a, b) = sum_{i,j} W[i, j] bit_i(a) bit_j(b),

with W[i, j] = K[i, j] w_i w_j for integer K (w_i = 2^i, w_7 = -2^7: the bit weights of a
signed byte), splits into terms

    mul(a, b) = sum_t c_t * (a & ma_t) * (b & mb_t)                          (1)

where `x & m` is the int8 operand with the bits outside mask m cleared, read as signed, and
K = sum_t c_t 1[ma_t] 1[mb_t]^T is a sum of signed "rectangles" of partial products. Every
EvoApproxLib signed 8x8 multiplier is of this form (K is 0/1: the partial products kept),
so each layer becomes a few ordinary integer convs/matmuls on masked operands, bit-exact.

The terms are ordered so the first one is the *main* product (largest masks) and the rest are
*corrections*, which for the catalog touch only the low bits of each operand. `decompose`
finds W from the LUT itself (any LUT, not only the catalog), searches for the fewest terms
(ties broken by fewer correction bits), verifies (1) on all 65,536 operand pairs, and says
plainly when no such split exists (Mitchell, DRUM, arbitrary tables).

A term in the form a pass emits: with sa = lowest set bit of ma (likewise sb),

    c * (a & ma) * (b & mb) = (c << (sa + sb)) * ((a & ma) >> sa) * ((b & mb) >> sb)

so `weight = c * 2^(sa+sb)` multiplies an integer dot product of small shifted operands.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import numpy as np

from multipliers.lut import BIT_WEIGHTS, apply_mask, bits, operand_grid

ALL_BITS = 0xFF


@dataclass(frozen=True)
class Term:
    """One product `coef * (a & mask_a) * (b & mask_b)` of formula (1)."""

    coef: int  # integer weight
    mask_a: int  # 8-bit mask on the first operand (activation by default)
    mask_b: int  # 8-bit mask on the second operand (weight by default)

    @property
    def shift_a(self) -> int:
        return (self.mask_a & -self.mask_a).bit_length() - 1

    @property
    def shift_b(self) -> int:
        return (self.mask_b & -self.mask_b).bit_length() - 1

    @property
    def weight(self) -> int:
        """Multiplier of the shifted product ((a & ma) >> sa) * ((b & mb) >> sb)."""
        return self.coef << (self.shift_a + self.shift_b)

    @property
    def bits_a(self) -> int:
        return bin(self.mask_a).count("1")

    @property
    def bits_b(self) -> int:
        return bin(self.mask_b).count("1")

    def evaluate(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return self.coef * apply_mask(a, self.mask_a) * apply_mask(b, self.mask_b)

    def to_dict(self) -> dict:
        return {"coef": self.coef, "mask_a": self.mask_a, "mask_b": self.mask_b,
                "shift_a": self.shift_a, "shift_b": self.shift_b, "weight": self.weight}

    def __str__(self) -> str:
        def operand(name, mask):
            return name if mask == ALL_BITS else f"({name} & 0x{mask:02X})"
        sign = "-" if self.coef < 0 else "+"
        scale = f"{abs(self.coef)}*" if abs(self.coef) != 1 else ""
        return f"{sign} {scale}{operand('a', self.mask_a)}*{operand('b', self.mask_b)}"


@dataclass(frozen=True)
class Decomposition:
    """Result of `decompose`: exact terms of formula (1), or why none exist."""

    exact: bool  # True when the terms reproduce the LUT on all 65,536 pairs
    terms: tuple[Term, ...] = ()  # main product first, then corrections
    lower_bound: int = 0  # rank of K: no split of form (1) has fewer terms
    reason: str = ""  # why no decomposition exists (when not exact)
    mismatches: int = field(default=0)  # operand pairs the best bilinear form gets wrong

    @property
    def num_terms(self) -> int:
        return len(self.terms)

    @property
    def minimal(self) -> bool:
        return self.exact and self.num_terms == self.lower_bound

    @property
    def main(self) -> Term | None:
        return self.terms[0] if self.terms else None

    @property
    def corrections(self) -> tuple[Term, ...]:
        return self.terms[1:]

    @property
    def is_mask_only(self) -> bool:
        """A single product of masked operands: the layer stays one ordinary int8 conv."""
        return self.exact and self.num_terms == 1 and self.terms[0].coef == 1

    def evaluate(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        if not self.exact:
            raise ValueError(f"no exact decomposition: {self.reason}")
        total = np.zeros(np.broadcast(a, b).shape, dtype=np.int64)
        for t in self.terms:
            total += t.evaluate(a, b)
        return total

    def formula(self) -> str:
        if not self.exact:
            return f"none ({self.reason})"
        return " ".join(str(t) for t in self.terms).removeprefix("+ ")

    def to_dict(self) -> dict:
        return {"exact": self.exact, "terms": self.num_terms, "lower_bound": self.lower_bound,
                "minimal": self.minimal, "formula": self.formula(),
                "reason": self.reason or None, "mismatches": self.mismatches,
                "term_list": [t.to_dict() for t in self.terms]}


# ------------------------------------------------------------------------------ solving
def _bit_patterns() -> list[int]:
    """Operand values with exactly one bit set: 1, 2, ..., 64, -128."""
    return [int(w) for w in BIT_WEIGHTS]


def bilinear_coefficients(lut: np.ndarray) -> np.ndarray:
    """Integer W9 (9, 9) with lut(a, b) == f(a)^T W9 f(b) when the LUT is bilinear in bits,
    where f(x) = [1, bit_0(x), ..., bit_7(x)].

    Solved exactly from 81 LUT entries: at x = 0 and the single-bit values, f(x) is the
    unimodular matrix F = [[1, 0], [1, I]], so W9 = F^-1 L F^-T with integer arithmetic.
    """
    points = [0] + _bit_patterns()
    sub = lut.astype(np.int64)[np.ix_([p + 128 for p in points], [p + 128 for p in points])]
    f_inv = np.eye(9, dtype=np.int64)
    f_inv[1:, 0] = -1
    return f_inv @ sub @ f_inv.T


def _mask(rows: np.ndarray) -> int:
    return int(sum(1 << int(i) for i in np.flatnonzero(rows)))


def _row_group_terms(k: np.ndarray) -> list[Term]:
    """Split integer K into rectangles by grouping equal rows, then equal values in a row."""
    terms = []
    for row in {tuple(r) for r in k if np.any(r)}:
        rows = np.all(k == np.array(row), axis=1)
        for value in sorted(set(row) - {0}):
            terms.append(Term(int(value), _mask(rows), _mask(np.array(row) == value)))
    return terms


def _split(k: np.ndarray) -> list[Term]:
    """The smaller of the row-grouped split of K and the (transposed) column-grouped one."""
    by_rows = _row_group_terms(k)
    by_cols = [Term(t.coef, t.mask_b, t.mask_a) for t in _row_group_terms(k.T)]
    return min(by_rows, by_cols, key=len)


def _rectangle(coef: int, mask_a: int, mask_b: int) -> np.ndarray:
    ra = (mask_a >> np.arange(8)) & 1
    rb = (mask_b >> np.arange(8)) & 1
    return coef * np.outer(ra, rb)


def _cost(terms: list[Term]) -> tuple[int, int]:
    """Fewest terms first; then the fewest operand bits in the corrections (cheap fast path)."""
    return len(terms), sum(t.bits_a + t.bits_b for t in terms[1:])


def _main_candidates(k: np.ndarray):
    """Candidate main products: for every non-zero value of K, the rectangle spanned by the
    rows and columns where it occurs, and the full one."""
    for value in sorted(set(k.ravel().tolist()) - {0}):
        hit = k == value
        row_masks = {_mask(np.any(hit, axis=1)), ALL_BITS}
        col_masks = {_mask(np.any(hit, axis=0)), ALL_BITS}
        for ma, mb in itertools.product(row_masks, col_masks):
            yield Term(int(value), ma, mb)


def _order(terms: list[Term]) -> tuple[Term, ...]:
    """Main product (most bits) first, corrections after, by decreasing size."""
    return tuple(sorted(terms, key=lambda t: (-(t.bits_a * t.bits_b), -t.mask_a, -t.mask_b)))


def split_rectangles(k: np.ndarray) -> list[Term]:
    """Fewest signed rectangles found for integer K (8, 8), by grouping rows or columns,
    optionally after taking out one main rectangle."""
    best = _split(k)
    for main in _main_candidates(k):
        rest = k - _rectangle(main.coef, main.mask_a, main.mask_b)
        candidate = [main] + _split(rest)
        if _cost(list(_order(candidate))) < _cost(list(_order(best))):
            best = candidate
    return list(_order(best))


def decompose(lut: np.ndarray) -> Decomposition:
    """Find the exact split (1) of `lut`, verified on all 65,536 operand pairs."""
    w9 = bilinear_coefficients(lut)
    a, b = operand_grid()
    fa = np.concatenate([np.ones((256, 1), dtype=np.int64), bits(a[:, 0])], axis=1)
    rebuilt = fa @ w9 @ fa.T
    mismatches = int(np.count_nonzero(rebuilt != lut))
    if mismatches:
        return Decomposition(False, reason=f"not bilinear in the operand bits: the bilinear form "
                             f"through the LUT's bit-basis entries differs on {mismatches} of "
                             f"65536 operand pairs", mismatches=mismatches)
    if np.any(w9[0, :]) or np.any(w9[:, 0]):
        return Decomposition(False, reason="bilinear, but with constant or single-operand terms, "
                             "which masked products cannot express")
    weights = np.outer(BIT_WEIGHTS, BIT_WEIGHTS)
    w = w9[1:, 1:]
    if np.any(w % weights):
        return Decomposition(False, reason="bilinear, but some bit-product coefficients are not "
                             "integer multiples of their partial-product weights")
    k = w // weights
    lower_bound = int(np.linalg.matrix_rank(k.astype(np.float64)))
    if lower_bound == 0:
        return Decomposition(True, terms=(), lower_bound=0)
    terms = tuple(split_rectangles(k))
    result = Decomposition(True, terms=terms, lower_bound=lower_bound)
    if np.any(result.evaluate(a, b) != lut):  # cannot happen if the algebra above holds
        raise AssertionError("decomposition failed verification")
    return result
