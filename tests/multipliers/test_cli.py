"""`python -m multipliers` through the real entry point."""

import json
from pathlib import Path

import numpy as np
import pytest

import multipliers

from axmoe_testing import run_cli

PP_MODEL = (Path(__file__).with_name("data") / "mul8s_pp2.c").read_text()


def cli(*args, ok=True):
    return run_cli("multipliers", *args, ok=ok)


def test_list_json():
    rows = json.loads(cli("list", "--json").stdout)
    assert [r["name"] for r in rows] == list(multipliers.catalog())
    row = next(r for r in rows if r["name"] == "mul8s_1KVA")
    assert row["decomposable"] is True and row["terms"] == 5 and row["power_mW"] == 0.391
    assert {"kind", "mae", "wce", "ep_pct", "mre_pct", "power_mW"} <= set(row)


def test_list_table_and_all():
    out = cli("list", "--all").stdout
    assert "mul8s_1L2L" in out and "mitchell" in out and "no (LUT)" in out and "axmoe8" in out


def test_show():
    out = cli("show", "evoapprox2020:mul8s_1KVA").stdout
    assert out.startswith("mul8s_1KV8") and "published" in out and "3 term(s)" in out
    data = json.loads(cli("show", "drum:5", "--json").stdout)
    assert data["decomposition"]["exact"] is False and data["power_mW"] is None


def test_export_lut_and_decompose_npy(tmp_path):
    out = tmp_path / "l2l.npy"
    cli("export-lut", "mul8s_1L2L", out)
    assert np.array_equal(np.load(out), multipliers.get("mul8s_1L2L").lut)
    data = json.loads(cli("decompose", out, "--json").stdout)
    assert data["exact"] is True and data["terms"] == 1
    assert data["term_list"][0]["mask_a"] == 0xFC


@pytest.mark.parametrize("name, exact, terms", [("mul8s_1KVA", True, 5), ("mitchell", False, 0),
                                                ("pp:i=0", True, 1)])
def test_decompose_json(name, exact, terms):
    data = json.loads(cli("decompose", name, "--json").stdout)
    assert data["exact"] is exact and data["terms"] == terms


def test_import_c(tmp_path):
    src = tmp_path / "m.c"
    src.write_text(PP_MODEL)
    out = tmp_path / "m.npy"
    proc = cli("import-c", src, out, "--name", "mul8s_pp2")
    assert "MAE 1.25" in proc.stdout and "3 term(s)" in proc.stdout
    assert np.array_equal(np.load(out), multipliers.get("mul8s_1KV8").lut)


@pytest.mark.parametrize("args, fragment", [
    (("show", "mul8s_nope"), "unknown multiplier"),
    (("decompose", "missing.npy"), "no such file"),
    (("import-c", "missing.c", "x.npy"), "no such file"),
    (("export-lut", "drum:1", "x.npy"), "3 <= k <= 7"),
])
def test_user_errors_are_one_line(args, fragment, tmp_path):
    proc = cli(*args, ok=False)
    assert proc.returncode == 2
    assert fragment in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_bad_lut_file_is_one_line(tmp_path):
    bad = tmp_path / "bad.npy"
    np.save(bad, np.zeros((16, 16), np.int32))
    proc = cli("show", bad, ok=False)
    assert proc.returncode == 2 and "shape (256, 256)" in proc.stderr and "Traceback" not in proc.stderr


def test_plot_writes_a_png(tmp_path):
    out = tmp_path / "p.png"
    cli("plot", out, "--metric", "wce")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 10_000
