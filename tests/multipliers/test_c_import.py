"""Importing EvoApproxLib-format C models."""

import textwrap
from pathlib import Path

import numpy as np
import pytest

import multipliers
from multipliers.c_import import CImportError, find_functions, import_c

DATA = Path(__file__).with_name("data")
# An EvoApproxLib-style signed model: partial products with i + j < 2 removed (= mul8s_1KV8).
PP_MODEL = (DATA / "mul8s_pp2.c").read_text()

# The unsigned-interface variant: raw bit patterns in, two's-complement pattern out.
GATE_MODEL = textwrap.dedent("""
    #include <stdint.h>
    uint16_t mul8s_gates(uint8_t A, uint8_t B)
    {
      uint8_t n_0 = (A >> 0) & 0x1;
      uint8_t n_1 = (A >> 1) & 0x1;
      uint8_t am = A & 0xFC, bm = B & 0xFC;   /* mask form: (a & ~3) * (b & ~3) */
      (void)n_0; (void)n_1;
      return (uint16_t)((int16_t)((int8_t)am * (int8_t)bm));
    }
""")


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_signed_model_imports_to_catalog_lut(tmp_path):
    lut = import_c(write(tmp_path, "pp.c", PP_MODEL))
    assert np.array_equal(lut, multipliers.get("mul8s_1KV8").lut)


def test_unsigned_interface_variant(tmp_path):
    lut = import_c(write(tmp_path, "gates.c", GATE_MODEL))
    assert np.array_equal(lut, multipliers.get("mul8s_1L2L").lut)


def test_choose_by_name_among_several(tmp_path):
    path = write(tmp_path, "two.c", PP_MODEL + GATE_MODEL)
    assert [f[1] for f in find_functions(path.read_text())] == ["mul8s_pp2", "mul8s_gates"]
    with pytest.raises(CImportError, match="several multipliers"):
        import_c(path)
    assert np.array_equal(import_c(path, name="mul8s_gates"), multipliers.get("mul8s_1L2L").lut)
    with pytest.raises(CImportError, match="no multiplier function named 'nope'"):
        import_c(path, name="nope")


@pytest.mark.parametrize("source, message", [
    ("int main(void) { return 0; }", "no function of the form"),
    ("#include <stdint.h>\nint16_t f(int8_t A, int8_t B) { return A * B +; }", "does not compile"),
    ("#include <stdint.h>\nint32_t f(int8_t A, int8_t B) { return 40000 + A * B; }", "int16"),
])
def test_bad_models(tmp_path, source, message):
    with pytest.raises(CImportError, match=message):
        import_c(write(tmp_path, "bad.c", source))


def test_missing_file(tmp_path):
    with pytest.raises(CImportError, match="no such file"):
        import_c(tmp_path / "missing.c")


def test_timeout(tmp_path):
    source = "#include <stdint.h>\nint16_t f(int8_t A, int8_t B) { for (;;) {} return 0; }"
    with pytest.raises(CImportError, match="longer than"):
        import_c(write(tmp_path, "loop.c", source), timeout=1.0)
