"""The op library finds the decomposed (fast) path from the LUT itself, as multipliers/decompose.py
does: every catalog multiplier decomposes, Mitchell / DRUM / unstructured tables do not, and
random bilinear tables (not in any catalog) are recognised and still computed exactly."""

import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import multipliers
from multipliers.lut import BIT_WEIGHTS, apply_mask, bits, operand_grid
from multipliers.oracle import lut_conv
from op_models import integer_op_model, sessions
from runtime.ort import describe_lut

TERM = re.compile(r"([+-]\d+)\*\(a&0x([0-9A-F]{2})\)\*\(b&0x([0-9A-F]{2})\)")


def parse_terms(description: str) -> list[tuple[int, int, int]]:
    assert description.startswith("decomposed: "), description
    return [(int(c), int(ma, 16), int(mb, 16)) for c, ma, mb in TERM.findall(description)]


def rebuild(terms) -> np.ndarray:
    a, b = operand_grid()
    return sum(c * apply_mask(a, ma) * apply_mask(b, mb) for c, ma, mb in terms)


@pytest.mark.parametrize("name", list(multipliers.catalog()))
def test_every_catalog_multiplier_takes_the_decomposed_path(name):
    mult = multipliers.get(name)
    terms = parse_terms(describe_lut(mult.lut))
    assert len(terms) == mult.decomposition.num_terms  # as few terms as the Python search
    assert np.array_equal(rebuild(terms), mult.lut)


@pytest.mark.parametrize("name", ["mitchell", "drum:3", "drum:4", "drum:6"])
def test_non_decomposable_multipliers_take_the_lut_path(name):
    assert describe_lut(multipliers.get(name).lut).startswith("lut: no exact decomposition: not bilinear")


def test_other_tables_say_why_they_take_the_lut_path():
    a, b = operand_grid()
    assert "constant or single-operand" in describe_lut((a * b + 1).astype(np.int32))
    assert "constant or single-operand" in describe_lut((a * b + a).astype(np.int32))
    assert "not fit an int8 weight" in describe_lut((-(a * b)).astype(np.int32))  # -1 * b overflows at b = -128
    wide = np.random.default_rng(0).integers(-2**31, 2**31, (256, 256), dtype=np.int64).astype(np.int32)
    assert "entries exceed int16" in describe_lut(wide)


@st.composite
def bilinear_tables(draw):
    """lut(a, b) = sum_ij K[i, j] w_i w_j bit_i(a) bit_j(b) for a random small integer K."""
    k = np.zeros((8, 8), np.int64)
    for _ in range(draw(st.integers(1, 6))):
        k[draw(st.integers(0, 7)), draw(st.integers(0, 7))] += draw(st.sampled_from([-1, 1, 2]))
    if draw(st.booleans()):
        k[2:, 2:] += 1  # a big main rectangle, like a masked product
    a, b = operand_grid()
    fa, fb = bits(a[:, 0]) * BIT_WEIGHTS, bits(b[0, :]) * BIT_WEIGHTS
    lut = fa @ k @ fb.T
    if np.abs(lut).max() >= 2**31:
        k[:] = 0
        lut = np.zeros((256, 256), np.int64)
    return lut.astype(np.int32)


@settings(max_examples=25)
@given(bilinear_tables(), st.integers(0, 2**31 - 1))
def test_random_bilinear_tables_are_detected_and_exact(table, seed):
    description = describe_lut(table)
    if description.startswith("decomposed: "):
        assert np.array_equal(rebuild(parse_terms(description)), table)
    else:  # too many terms, or a coefficient that does not fit int8 weights
        assert "terms" in description or "int8 weight" in description, description
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, (1, 5, 7, 7), dtype=np.uint8)
    w = rng.integers(-128, 128, (6, 5, 3, 3), dtype=np.int8)
    model, feeds = integer_op_model("ApproxConvInteger", x, w, 128, pads=[1, 1, 1, 1])
    want = lut_conv(x.astype(np.int64) - 128, w, table, pads=[1, 1, 1, 1])
    for variant, sess in sessions(model).items():
        assert np.array_equal(sess.run(None, {**feeds, "lut": table})[0], want), (variant, description)
