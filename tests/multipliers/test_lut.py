import numpy as np
import pytest

from multipliers.lut import (LUTError, apply_mask, bit_runs, bits, exact_lut, load_lut, save_lut,
                             signed_mask, validate_lut)


def test_exact_lut_convention():
    lut = exact_lut()
    assert lut.dtype == np.int32 and lut.shape == (256, 256)
    for a, b in [(-128, -128), (-128, 127), (0, 5), (-3, 7), (127, 127)]:
        assert lut[a + 128, b + 128] == a * b
    assert not lut.flags.writeable


@pytest.mark.parametrize("array, message", [
    (np.zeros((255, 256), np.int32), "shape"),
    (np.zeros((256, 256), np.float32) + 0.5, "integers"),
    (np.full((256, 256), 40000, np.int64), "int16"),
    (np.full((256, 256), -40000, np.int64), "int16"),
])
def test_validate_lut_rejects(array, message):
    with pytest.raises(LUTError, match=message):
        validate_lut(array)


def test_validate_lut_accepts_integer_valued_floats_and_copies():
    src = exact_lut().astype(np.float64)
    out = validate_lut(src)
    assert out.dtype == np.int32 and np.array_equal(out, exact_lut())


def test_save_load_roundtrip(tmp_path):
    path = save_lut(exact_lut(), tmp_path / "sub" / "x.npy")
    assert np.array_equal(load_lut(path), exact_lut())


def test_load_lut_errors(tmp_path):
    with pytest.raises(LUTError, match="no such file"):
        load_lut(tmp_path / "missing.npy")
    bad = tmp_path / "bad.npy"
    bad.write_bytes(b"not numpy")
    with pytest.raises(LUTError, match="not a readable"):
        load_lut(bad)
    pickled = tmp_path / "obj.npy"
    np.save(pickled, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(LUTError):
        load_lut(pickled)


def test_signed_mask_and_apply_mask_match_int8_semantics():
    values = np.arange(-128, 128)
    for mask in (0x00, 0x01, 0x7F, 0x80, 0xFC, 0xFF):
        as_int8 = (values.astype(np.int8) & np.int8(signed_mask(mask))).astype(np.int64)
        assert np.array_equal(apply_mask(values, mask), as_int8)
    with pytest.raises(ValueError):
        signed_mask(256)


def test_bits_reconstruct_value():
    values = np.arange(-128, 128)
    weights = np.array([1, 2, 4, 8, 16, 32, 64, -128])
    assert np.array_equal(bits(values) @ weights, values)


@pytest.mark.parametrize("mask", range(256))
def test_bit_runs_are_maximal_and_rebuild_the_mask(mask):
    runs = bit_runs(mask)
    assert sum(((1 << n) - 1) << lo for lo, n in runs) == mask
    assert all(n > 0 for _, n in runs)
    # maximal: consecutive runs are separated by at least one clear bit
    assert all(lo2 > lo1 + n1 for (lo1, n1), (lo2, _) in zip(runs, runs[1:]))
