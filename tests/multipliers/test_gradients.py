"""multipliers.gradients: the 1-D gradient tables of the "ste" and LUT-1D ("lut") estimators."""

import numpy as np
import pytest

import multipliers
from multipliers.gradients import gradient_tables, lut_tables, ste_tables
from multipliers.lut import apply_mask

OPS = np.arange(-128, 128)
MULTS = list(multipliers.catalog()) + ["mitchell", "drum:4"]


@pytest.mark.parametrize("window", ["triangle", "uniform"])
@pytest.mark.parametrize("mult", [None, "mul8s_1KV6"])
def test_exact_multiplier_tables_are_the_exact_derivative_bit_for_bit(mult, window):
    mult = multipliers.get(mult) if mult else None
    lut = lut_tables(mult, window)
    ste = ste_tables(mult)
    for table in (lut.d_a, lut.d_w, ste.d_a, ste.d_w):
        assert table.dtype == np.float64 and np.array_equal(table, OPS)
    assert lut.identity and ste.identity


def _reference(lut: np.ndarray, window: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The module docstring's formulas, one entry at a time."""
    m = lut.astype(np.float64)

    def derivative(row):  # central inside, one-sided at the ends
        d = np.empty(256)
        d[0], d[255] = row[1] - row[0], row[255] - row[254]
        for i in range(1, 255):
            d[i] = (row[i + 1] - row[i - 1]) / 2
        return d

    d_a = np.array([np.dot(window, derivative(m[:, j])) / window.sum() for j in range(256)])
    d_w = np.array([np.dot(window, derivative(m[i, :])) / window.sum() for i in range(256)])
    return d_a, d_w


@pytest.mark.parametrize("name", ["mul8s_1L2L", "mul8s_1KVA", "mitchell", "drum:4"])
def test_lut_tables_follow_the_documented_formula(name):
    mult = multipliers.get(name)
    triangle = np.minimum(OPS + 129, 128 - OPS).astype(np.float64)  # 1 ... 128 128 ... 1
    for window, h in (("triangle", triangle), ("uniform", np.ones(256))):
        tables = lut_tables(mult, window)
        d_a, d_w = _reference(mult.lut, h)
        np.testing.assert_allclose(tables.d_a, d_a, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(tables.d_w, d_w, rtol=1e-12, atol=1e-12)


def test_uniform_mean_telescopes_to_the_row_ends():
    """Why the window: a uniform mean of the differences sees only four entries of each row."""
    lut = multipliers.get("drum:4").lut.astype(np.float64)
    ends = (3 * lut[255] - lut[254] + lut[1] - 3 * lut[0]) / 2 / 256
    np.testing.assert_allclose(lut_tables(multipliers.get("drum:4"), "uniform").d_a, ends, rtol=1e-12)


@pytest.mark.parametrize("name", ["mul8s_1L2L", "mul8s_1KVM", "mul8s_1L12"])
def test_lut_tables_of_a_mask_multiplier_are_the_masked_operand_scaled(name):
    """M = (a & ma)(w & mb): d_a[w] = c_a (w & mb), d_w[a] = c_w (a & ma), c the windowed mean slope
    of the masked operand (1 when the mask keeps bit 0)."""
    mult = multipliers.get(name)
    term = mult.decomposition.terms[0]
    tables = lut_tables(mult)
    for table, mask, other in ((tables.d_a, term.mask_b, term.mask_a), (tables.d_w, term.mask_a, term.mask_b)):
        masked = apply_mask(OPS, mask).astype(np.float64)
        slope = np.dot(np.gradient(apply_mask(OPS, other).astype(np.float64)), 128.5 - np.abs(OPS + 0.5)) / 16512
        np.testing.assert_allclose(table, slope * masked, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", MULTS)
def test_ste_tables_are_the_main_term_or_the_exact_product(name):
    mult = multipliers.get(name)
    tables = ste_tables(mult)
    dec = mult.decomposition
    if dec.exact:
        main = dec.terms[0]
        assert np.array_equal(tables.d_a, main.coef * apply_mask(OPS, main.mask_b))
        assert np.array_equal(tables.d_w, main.coef * apply_mask(OPS, main.mask_a))
    else:
        assert tables.identity


def test_gradient_tables_are_cached_and_checked():
    mult = multipliers.get("mitchell")
    assert gradient_tables(mult, "lut") is gradient_tables(multipliers.get("mitchell"), "lut")
    assert np.array_equal(gradient_tables(mult, "lut").d_a, lut_tables(mult).d_a)
    with pytest.raises(ValueError, match="gradient must be one of ste, lut"):
        gradient_tables(mult, "lut2d")
    with pytest.raises(ValueError, match="window must be one of"):
        lut_tables(mult, "hann")
