"""The LUT convention shared by every stage of axmoe.

A signed 8x8 multiplier is a table `lut` of int32, shape (256, 256), with

    lut[a + 128, b + 128] == mul(a, b)        a, b in [-128, 127]

where `a` is the multiplier's first operand (by default the activation) and `b` the second
(the weight). Values must fit in int16, as every 8x8 product does.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

LUT_SHAPE = (256, 256)
#: All signed 8-bit operand values in LUT index order: OPERANDS[k] == k - 128.
OPERANDS = np.arange(-128, 128, dtype=np.int64)
INT16_MIN, INT16_MAX = -(1 << 15), (1 << 15) - 1


class LUTError(ValueError):
    """A LUT (array or file) that breaks the convention above."""


def operand_grid() -> tuple[np.ndarray, np.ndarray]:
    """int64 arrays `a`, `b` of shape (256, 256) with a[i, j] = i - 128, b[i, j] = j - 128."""
    return np.meshgrid(OPERANDS, OPERANDS, indexing="ij")


def exact_lut() -> np.ndarray:
    """The exact product table, int32 (256, 256)."""
    a, b = operand_grid()
    return freeze((a * b).astype(np.int32))


def lut_from_function(fn: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> np.ndarray:
    """Tabulate a vectorised `fn(a, b)` (int64 arrays of operands) into a checked LUT."""
    a, b = operand_grid()
    return validate_lut(np.asarray(fn(a, b)), source="function")


def freeze(lut: np.ndarray) -> np.ndarray:
    lut.setflags(write=False)
    return lut


def validate_lut(array: np.ndarray, source: str = "LUT") -> np.ndarray:
    """Check shape, dtype and range; return a read-only int32 copy.

    Raises:
        LUTError: with one line naming what is wrong.
    """
    array = np.asarray(array)
    if array.shape != LUT_SHAPE:
        raise LUTError(f"{source}: LUT must have shape (256, 256), got {array.shape}")
    if array.dtype.kind not in "iu":
        if array.dtype.kind == "f" and np.all(np.isfinite(array)) and np.all(array == np.round(array)):
            pass  # integer-valued floats (e.g. a table saved by another tool) are accepted
        else:
            raise LUTError(f"{source}: LUT must hold integers, got dtype {array.dtype}")
    lo, hi = array.min(), array.max()
    if lo < INT16_MIN or hi > INT16_MAX:
        raise LUTError(f"{source}: LUT values must fit in int16 ([{INT16_MIN}, {INT16_MAX}]), "
                       f"got range [{lo}, {hi}]")
    return freeze(array.astype(np.int32))


def load_lut(path: str | Path) -> np.ndarray:
    """Load a LUT saved as `.npy` (no pickles) and validate it."""
    path = Path(path)
    if not path.is_file():
        raise LUTError(f"{path}: no such file")
    try:
        array = np.load(path, allow_pickle=False)
    except Exception as exc:  # numpy raises several types for malformed files
        raise LUTError(f"{path}: not a readable .npy array ({exc})") from None
    return validate_lut(array, source=str(path))


def save_lut(lut: np.ndarray, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, validate_lut(lut))
    return path


def signed_mask(mask: int) -> int:
    """The 8-bit `mask` as a two's-complement integer, so `x & signed_mask(m)` masks an int8
    value held in a wider signed integer (bit 7 carries weight -128)."""
    if not 0 <= mask <= 0xFF:
        raise ValueError(f"mask must be an 8-bit value, got {mask}")
    return mask - 256 if mask & 0x80 else mask


def apply_mask(x: np.ndarray, mask: int) -> np.ndarray:
    """Value of the int8 operand(s) `x & mask`, read as signed 8-bit, as int64."""
    return np.asarray(x, dtype=np.int64) & signed_mask(mask)


def bits(x: np.ndarray) -> np.ndarray:
    """Two's-complement bits of int8 values: int64 array of shape x.shape + (8,), LSB first."""
    u = np.asarray(x, dtype=np.int64) & 0xFF
    return (u[..., None] >> np.arange(8)) & 1


def bit_runs(mask: int) -> list[tuple[int, int]]:
    """Maximal runs of set bits of an 8-bit mask as (lowest bit, length), lowest run first:
    0b1101_0011 -> [(0, 2), (4, 1), (6, 2)]."""
    runs, bit = [], 0
    while bit < 8:
        if mask >> bit & 1:
            start = bit
            while bit < 8 and mask >> bit & 1:
                bit += 1
            runs.append((start, bit - start))
        else:
            bit += 1
    return runs


#: Weight of bit i in a signed 8-bit value: 2^i, and -2^7 for the sign bit.
BIT_WEIGHTS = np.array([1, 2, 4, 8, 16, 32, 64, -128], dtype=np.int64)
