"""Parametric multiplier families: each member is a real multiplier users can pick by name.

- operand masking   `mask:a=0xFC,b=0xFC`   mul(a, b) = (a & ma) * (b & mb)
- partial products  `pp:i+j<3`            mul(a, b) = a*b - sum_{(i,j) in P} s_i s_j 2^(i+j) bit_i(a) bit_j(b)
- Mitchell          `mitchell`            logarithmic multiplier (Mitchell 1962), sign-magnitude
- DRUM-k            `drum:4`              dynamic range unbiased multiplier (Hashemi et al. 2015)

`s_i` is -1 for the sign bit (i = 7) and 1 otherwise (Baugh-Wooley signed product). Mitchell
and DRUM do not decompose into products of masked operands; they exercise the LUT path.
"""

from __future__ import annotations

import re

from dataclasses import dataclass
from typing import Callable

import numpy as np

from multipliers.lut import BIT_WEIGHTS, apply_mask, bits, lut_from_function
from multipliers.multiplier import Multiplier

class FamilySpecError(ValueError):
    pass


@dataclass(frozen=True)
class Family:
    """One parametric family, named `head:ARGS` (or `head` alone)."""
    head: str                                 # the name before ":", e.g. "mask"
    syntax: str                               # how a member is written, e.g. "mask:a=M,b=M"
    help: str                                 # one line, shown by the CLI and in errors
    build: Callable[[str], Multiplier]        # ARGS (text after ":", "" if none) -> member


#: head -> family; a new family is one `@register_family` function below.
FAMILIES: dict[str, Family] = {}


def register_family(head: str, syntax: str, help: str):
    """Decorator registering `build(args) -> Multiplier` as the family `head`. `build`
    raises FamilySpecError for bad arguments, KeyError where `args` names no member."""
    def wrap(build: Callable[[str], Multiplier]) -> Callable[[str], Multiplier]:
        FAMILIES[head] = Family(head, syntax, help, build)
        return build
    return wrap


def member(spec: str) -> Multiplier:
    """The family member `spec` names ("pp:i+j<3"); KeyError when no family has it."""
    head, _, args = spec.partition(":")
    family = FAMILIES.get(head)
    if family is None:
        raise KeyError(spec)
    return family.build(args)


# --------------------------------------------------------------------------- operand masks
def parse_mask(text: str) -> int:
    text = text.strip()
    try:
        if text.startswith("~"):
            value = 0xFF & ~int(text[1:], 0)
        else:
            value = int(text, 0)
    except ValueError:
        raise FamilySpecError(f"bad mask {text!r}: use an 8-bit value such as 0xFC or ~3") from None
    if not 0 <= value <= 0xFF:
        raise FamilySpecError(f"mask {text!r} is not an 8-bit value")
    return value


def mask_lut(mask_a: int, mask_b: int) -> np.ndarray:
    """LUT of (a & mask_a) * (b & mask_b), masks on the operands' two's-complement bits."""
    return lut_from_function(lambda a, b: apply_mask(a, mask_a) * apply_mask(b, mask_b))


def parse_mask_spec(spec: str) -> tuple[int, int]:
    masks = {"a": 0xFF, "b": 0xFF}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        key, sep, value = part.partition("=")
        if not sep or key.strip() not in masks:
            raise FamilySpecError(f"bad mask spec {spec!r}: expected a=MASK,b=MASK")
        masks[key.strip()] = parse_mask(value)
    return masks["a"], masks["b"]


# ------------------------------------------------------------------- partial-product removal
_COND = re.compile(r"^(i\+j|i|j)\s*(<=|>=|==|=|<|>)\s*(\d+)$")
_OPS = {"<": np.less, "<=": np.less_equal, ">": np.greater, ">=": np.greater_equal,
        "=": np.equal, "==": np.equal}


def parse_pp_spec(spec: str) -> frozenset[tuple[int, int]]:
    """Set P of removed partial products (i, j), 0 <= i, j <= 7, from the `pp:` syntax."""
    i, j = np.meshgrid(np.arange(8), np.arange(8), indexing="ij")
    chosen = np.zeros((8, 8), dtype=bool)
    for token in filter(None, (t.strip() for t in spec.split(","))):
        if re.fullmatch(r"[0-7][0-7]", token):
            chosen[int(token[0]), int(token[1])] = True
            continue
        term = np.ones((8, 8), dtype=bool)
        for cond in token.split("&"):
            match = _COND.match(cond.strip())
            if not match:
                raise FamilySpecError(
                    f"bad partial-product term {cond.strip()!r} in {spec!r}: use 'ij' digit pairs "
                    "or conditions like i=0, i>=1&i+j<3")
            lhs, op, value = match.groups()
            var = {"i": i, "j": j, "i+j": i + j}[lhs]
            term &= _OPS[op](var, int(value))
        chosen |= term
    if not chosen.any():
        raise FamilySpecError(f"partial-product spec {spec!r} removes nothing")
    return frozenset((int(r), int(c)) for r, c in zip(*np.nonzero(chosen)))


def pp_lut(removed: frozenset[tuple[int, int]] | set[tuple[int, int]]) -> np.ndarray:
    """LUT of the signed (Baugh-Wooley) product with the partial products `removed` dropped."""
    keep = np.ones((8, 8), dtype=np.int64)
    for i, j in removed:
        keep[i, j] = 0
    weights = np.outer(BIT_WEIGHTS, BIT_WEIGHTS) * keep

    def fn(a, b):
        return np.einsum("...i,ij,...j->...", bits(a), weights, bits(b))

    return lut_from_function(fn)


def pp_spec_string(removed: frozenset[tuple[int, int]]) -> str:
    """Canonical `pp:` spec: the removed pairs as sorted 'ij' digits."""
    return "pp:" + ",".join(f"{i}{j}" for i, j in sorted(removed))


# --------------------------------------------------------------- non-decomposable families
def _floor_log2(x: np.ndarray) -> np.ndarray:
    out = np.zeros_like(x)
    for k in range(1, 9):
        out = np.where(x >= (1 << k), k, out)
    return out


def _sign_magnitude(fn):
    """Lift an unsigned magnitude multiplier to signed operands (sign-magnitude)."""
    def signed(a, b):
        return np.sign(a) * np.sign(b) * fn(np.abs(a), np.abs(b))
    return signed


def mitchell_lut() -> np.ndarray:
    """Mitchell's logarithmic multiplier on magnitudes, exact integer form.

    With x = 2^k1 + x', y = 2^k2 + y' (leading ones k1, k2) and s = x' 2^k2 + y' 2^k1:
        mul(x, y) = 2^(k1+k2) + s     if s < 2^(k1+k2)   (log-sum mantissa below 1)
                  = 2 s               otherwise
    which is 2^(k1+k2) (1 + m1 + m2) or 2^(k1+k2+1) (m1 + m2) with no rounding.
    """
    def magnitude(x, y):
        k1, k2 = _floor_log2(x), _floor_log2(y)
        s = (x - (1 << k1)) * (1 << k2) + (y - (1 << k2)) * (1 << k1)
        base = 1 << (k1 + k2)
        out = np.where(s < base, base + s, 2 * s)
        return np.where((x == 0) | (y == 0), 0, out)

    return lut_from_function(_sign_magnitude(magnitude))


def drum_lut(k: int) -> np.ndarray:
    """DRUM-k on magnitudes: keep the k bits from each operand's leading one, force the
    lowest kept bit to 1 (unbiasing), multiply, shift back. Magnitudes below 2^k are exact."""
    if not 3 <= k <= 7:
        raise FamilySpecError(f"DRUM needs 3 <= k <= 7 kept bits (k = 2 overflows int16), got {k}")

    def approx(x):
        shift = np.maximum(_floor_log2(x) - k + 1, 0)
        return np.where(shift > 0, ((x >> shift) | 1) << shift, x)

    return lut_from_function(_sign_magnitude(lambda x, y: approx(x) * approx(y)))


# --------------------------------------------------------------------------- the families
@register_family("mask", "mask:a=M,b=M",
                 "operand masking, M an 8-bit mask (0xFC) or ~K to clear the bits of K (~3 clears bits 0-1)")
def _mask_member(args: str) -> Multiplier:
    mask_a, mask_b = parse_mask_spec(args)
    return Multiplier(name=f"mask:a=0x{mask_a:02X},b=0x{mask_b:02X}", kind="mask",
                      lut=mask_lut(mask_a, mask_b),
                      description=f"(a & 0x{mask_a:02X}) * (b & 0x{mask_b:02X})",
                      provenance="axmoe operand-mask family")


@register_family("pp", "pp:SPEC",
                 "partial-product removal; SPEC is a comma-separated union of 'ij' pairs "
                 "(e.g. 07) and '&'-joined conditions on i, j, i+j (e.g. i=0, i>=1&i+j<3)")
def _pp_member(args: str) -> Multiplier:
    removed = parse_pp_spec(args)
    return Multiplier(name=pp_spec_string(removed), kind="pp", lut=pp_lut(removed),
                      description=f"a*b without partial products {sorted(removed)}",
                      provenance="axmoe partial-product-removal family")


@register_family("mitchell", "mitchell", "Mitchell's logarithmic multiplier (sign-magnitude)")
def _mitchell_member(args: str) -> Multiplier:
    if args:
        raise KeyError(f"mitchell:{args}")
    return Multiplier(name="mitchell", kind="log", lut=mitchell_lut(),
                      description="Mitchell logarithmic multiplier, sign-magnitude",
                      provenance="J. N. Mitchell, IRE Trans. Electronic Computers, 1962")


@register_family("drum", "drum:K", "DRUM with K kept bits per operand, K in 3..7 (sign-magnitude)")
def _drum_member(args: str) -> Multiplier:
    try:
        k = int(args)
    except ValueError:
        raise FamilySpecError(f"drum needs an integer K, e.g. drum:4, got {'drum:' + args!r}") from None
    return Multiplier(name=f"drum:{k}", kind="drum", lut=drum_lut(k),
                      description=f"DRUM-{k}, sign-magnitude",
                      provenance="Hashemi, Bahar, Reda, ICCAD 2015")


#: One-line syntax help per family, shown by the CLI and in unknown-name errors.
FAMILY_SYNTAX = {f.syntax: f.help for f in FAMILIES.values()}
