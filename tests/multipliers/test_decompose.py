"""Exact decomposition into products of bit-masked operands."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import multipliers
from multipliers import families
from multipliers.decompose import Term, decompose
from multipliers.lut import exact_lut, lut_from_function, operand_grid

EXPECTED_TERMS = {  # mask-form: 1 GEMM; partial-product ones: main product + corrections
    "mul8s_1KV6": 1, "mul8s_1KV8": 3, "mul8s_1KV9": 4, "mul8s_1KVA": 5, "mul8s_1KVM": 1,
    "mul8s_1KVP": 3, "mul8s_1KVQ": 4, "mul8s_1L2J": 1, "mul8s_1KX5": 4, "mul8s_1KXF": 1,
    "mul8s_1L2L": 1, "mul8s_1L2N": 1, "mul8s_1L12": 1,
}


def _check_exact(lut, dec):
    a, b = operand_grid()
    assert dec.exact
    total = np.zeros_like(a)
    for t in dec.terms:
        total += t.coef * multipliers.lut.apply_mask(a, t.mask_a) * multipliers.lut.apply_mask(b, t.mask_b)
    assert np.array_equal(total, lut)


@pytest.mark.parametrize("name", list(EXPECTED_TERMS))
def test_catalog_decompositions(name):
    m = multipliers.get(name)
    dec = m.decomposition
    _check_exact(m.lut, dec)
    assert dec.num_terms == EXPECTED_TERMS[name]
    assert dec.minimal  # as few terms as the rank of the partial-product matrix allows
    if m.kind in ("mask", "exact"):
        assert dec.is_mask_only
    else:
        # corrections touch at most 4 low bits of each operand (the runtime fast path relies on it)
        for t in dec.corrections:
            assert t.bits_a <= 4 and t.bits_b <= 4
            assert t.mask_a < 0x20 and t.mask_b < 0x20


def test_mask_multiplier_term_is_its_masks():
    (term,) = multipliers.get("mul8s_1L2L").decomposition.terms
    assert term == Term(1, 0xFC, 0xFC)
    assert (term.shift_a, term.shift_b, term.weight) == (2, 2, 16)


def test_term_shift_form_equals_masked_form():
    a, b = operand_grid()
    for term in [Term(-1, 0x0C, 0x06), Term(3, 0xF8, 0xFF), Term(1, 0x80, 0x80)]:
        shifted = term.weight * (multipliers.lut.apply_mask(a, term.mask_a) >> term.shift_a) \
            * (multipliers.lut.apply_mask(b, term.mask_b) >> term.shift_b)
        assert np.array_equal(shifted, term.evaluate(a, b))


@given(st.sets(st.tuples(st.integers(0, 7), st.integers(0, 7)), min_size=1, max_size=24))
def test_any_partial_product_set_decomposes_exactly(removed):
    lut = families.pp_lut(removed)
    dec = decompose(lut)
    _check_exact(lut, dec)
    assert dec.num_terms >= dec.lower_bound


@given(st.integers(0, 255), st.integers(0, 255), st.sampled_from([-2, -1, 1]))
def test_masked_products_with_any_masks_and_scale(ma, mb, scale):
    lut = lut_from_function(lambda a, b: scale * multipliers.lut.apply_mask(a, ma)
                            * multipliers.lut.apply_mask(b, mb))
    dec = decompose(lut)
    _check_exact(lut, dec)
    assert dec.num_terms == (0 if ma == 0 or mb == 0 else 1)


@pytest.mark.parametrize("name", ["mitchell", "drum:3", "drum:6"])
def test_non_decomposable_families_say_so(name):
    dec = multipliers.get(name).decomposition
    assert not dec.exact and dec.num_terms == 0 and dec.mismatches > 0
    assert "not bilinear" in dec.reason
    with pytest.raises(ValueError):
        dec.evaluate(np.zeros(1), np.zeros(1))


def test_random_table_is_not_decomposable():
    rng = np.random.default_rng(0)
    lut = exact_lut() + rng.integers(-2, 3, (256, 256))
    assert not decompose(lut).exact


def test_bilinear_with_offset_is_reported():
    dec = decompose(exact_lut() + 1)
    assert not dec.exact and "constant" in dec.reason


def test_bilinear_with_unaligned_coefficients_is_reported():
    # 3 * bit_0(a) * bit_1(b): bilinear, but not a multiple of the weight 2 of partial product (0, 1)
    dec = decompose(lut_from_function(lambda a, b: a * b + 3 * (a & 1) * ((b >> 1) & 1)))
    assert not dec.exact and "multiples" in dec.reason


def test_to_dict_is_json_ready():
    import json

    d = multipliers.get("mul8s_1KV8").decomposition.to_dict()
    assert json.loads(json.dumps(d))["terms"] == 3 and d["exact"] is True
