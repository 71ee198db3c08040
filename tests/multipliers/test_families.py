"""Parametric families against independent scalar definitions."""

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import multipliers
from multipliers import families
from multipliers.lut import exact_lut

OPERANDS = range(-128, 128)
SAMPLE = [-128, -127, -100, -64, -33, -8, -3, -1, 0, 1, 2, 3, 7, 8, 31, 64, 99, 126, 127]


@pytest.mark.parametrize("ma, mb", [(0xFF, 0xFF), (0xFE, 0xFF), (0xFC, 0xFC), (0x7F, 0xF0), (0x80, 0x01)])
def test_mask_family_matches_int8_bitwise(ma, mb):
    lut = families.mask_lut(ma, mb)
    a = np.arange(-128, 128, dtype=np.int8)
    expected = (a & np.int8(ma - 256 if ma > 127 else ma)).astype(int)[:, None] * \
               (a & np.int8(mb - 256 if mb > 127 else mb)).astype(int)[None, :]
    assert np.array_equal(lut, expected)


def test_mask_spec_forms():
    assert families.parse_mask_spec("a=~3,b=0xfc") == (0xFC, 0xFC)
    assert families.parse_mask_spec("b=~1") == (0xFF, 0xFE)
    assert multipliers.get("mask:a=~1,b=~1").sha256 == multipliers.get("mul8s_1L2J").sha256
    with pytest.raises(families.FamilySpecError):
        families.parse_mask_spec("a=0x1FF")


@pytest.mark.parametrize("spec, catalog_name", [
    ("i+j<2", "mul8s_1KV8"), ("i+j<3", "mul8s_1KV9"), ("i+j<4", "mul8s_1KVA"),
    ("i=0,i>=1&i+j<3", "mul8s_1KVP"), ("i=0,i+j<4", "mul8s_1KVQ"),
    ("i<=1,i>=2&i+j<5", "mul8s_1KX5"), ("00,01,10", "mul8s_1KV8"),
])
def test_pp_specs_reproduce_catalog(spec, catalog_name):
    lut = families.pp_lut(families.parse_pp_spec(spec))
    assert np.array_equal(lut, multipliers.get(catalog_name).lut)


def test_single_partial_product_removal_by_scalar_arithmetic():
    for i, j in [(0, 0), (3, 5), (7, 0), (7, 7)]:
        lut = families.pp_lut({(i, j)})
        for a in SAMPLE:
            for b in SAMPLE:
                wi = -(1 << i) if i == 7 else 1 << i
                wj = -(1 << j) if j == 7 else 1 << j
                expected = a * b - wi * wj * ((a & 0xFF) >> i & 1) * ((b & 0xFF) >> j & 1)
                assert lut[a + 128, b + 128] == expected


@given(st.sets(st.tuples(st.integers(0, 7), st.integers(0, 7)), min_size=1, max_size=20),
       st.sets(st.tuples(st.integers(0, 7), st.integers(0, 7)), min_size=1, max_size=20))
def test_pp_removal_is_additive(p1, p2):
    p2 = p2 - p1
    if not p2:
        return
    both = families.pp_lut(p1 | p2).astype(np.int64)
    assert np.array_equal(both, families.pp_lut(p1).astype(np.int64) + families.pp_lut(p2) - exact_lut())


def test_pp_removing_everything_gives_zero():
    assert not np.any(multipliers.get("pp:i+j<15").lut)


@pytest.mark.parametrize("spec", ["", "k<3", "i+j<<2", "88", "i>9"])
def test_bad_pp_specs(spec):
    with pytest.raises(families.FamilySpecError):
        families.parse_pp_spec(spec)


def _mitchell_float(x: int, y: int) -> float:
    if x == 0 or y == 0:
        return 0.0
    k1, k2 = int(math.log2(x)), int(math.log2(y))
    m1, m2 = x / 2 ** k1 - 1, y / 2 ** k2 - 1
    if m1 + m2 < 1:
        return 2 ** (k1 + k2) * (1 + m1 + m2)
    return 2 ** (k1 + k2 + 1) * (m1 + m2)


def test_mitchell_matches_float_definition():
    lut = multipliers.get("mitchell").lut
    for a in OPERANDS:
        for b in SAMPLE:
            expected = math.copysign(1, a) * math.copysign(1, b) * _mitchell_float(abs(a), abs(b))
            assert lut[a + 128, b + 128] == expected
    exact = exact_lut()
    nonzero = exact != 0
    # Mitchell never overestimates and is off by at most 1/9 (m1 = m2 = 1/2)
    assert np.all(np.abs(lut) <= np.abs(exact))
    assert np.max(1 - lut[nonzero] / exact[nonzero]) == pytest.approx(1 / 9)


def _drum_scalar(x: int, k: int) -> int:
    if x < (1 << k):
        return x
    shift = x.bit_length() - k
    return ((x >> shift) | 1) << shift


@pytest.mark.parametrize("k", [3, 4, 5, 6, 7])
def test_drum_matches_scalar_definition(k):
    lut = multipliers.get(f"drum:{k}").lut
    for a in OPERANDS:
        for b in SAMPLE:
            sign = (a > 0) - (a < 0)
            sign *= (b > 0) - (b < 0)
            assert lut[a + 128, b + 128] == sign * _drum_scalar(abs(a), k) * _drum_scalar(abs(b), k)


def test_drum_bad_k():
    with pytest.raises(families.FamilySpecError, match="3 <= k <= 7"):
        multipliers.get("drum:8")


def test_drum_error_shrinks_with_k():
    maes = [multipliers.get(f"drum:{k}").metrics.mae for k in range(3, 8)]
    assert maes == sorted(maes, reverse=True) and maes[-1] > 0
