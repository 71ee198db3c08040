"""The EvoApproxLib catalog: LUT checksums, metrics against the published ones, names."""

import csv
from decimal import Decimal
from pathlib import Path

import numpy as np
import pytest

import multipliers

TSV = Path(__file__).resolve().parents[2] / "multipliers" / "data" / "evoapprox_mul8s.tsv"
ROWS = list(csv.DictReader(TSV.read_text().splitlines(), delimiter="\t"))
METRIC_COLUMNS = {"MAE": "mae", "WCE": "wce", "EP_pct": "ep_pct", "MRE_pct": "mre_pct", "MSE": "mse"}


def test_catalog_has_all_thirteen_signed_multipliers():
    assert len(ROWS) == 13
    power = {r["name"]: float(r["power_mW"]) for r in ROWS}
    assert list(multipliers.catalog()) == sorted((r["name"] for r in ROWS), key=lambda n: -power[n])


@pytest.mark.parametrize("row", ROWS, ids=[r["name"] for r in ROWS])
def test_lut_sha256_matches_published(row):
    assert multipliers.get(row["name"]).sha256 == row["lut_sha256"]


@pytest.mark.parametrize("row", ROWS, ids=[r["name"] for r in ROWS])
def test_metrics_match_published_within_rounding(row):
    """Computed metrics agree with the published ones to one unit of the last published digit
    (EvoApproxLib rounds, and sometimes truncates, e.g. MAE 36.54 -> "36")."""
    metrics = multipliers.get(row["name"]).metrics.to_dict()
    for column, key in METRIC_COLUMNS.items():
        published = Decimal(row[column])
        unit = Decimal(1).scaleb(published.as_tuple().exponent)
        assert abs(Decimal(repr(metrics[key])) - published) <= unit, (column, metrics[key], row[column])


def test_pdk45_numbers_and_provenance():
    m = multipliers.get("mul8s_1L2L")
    assert (m.power_mW, m.area_um2, m.delay_ns) == (0.200, 411.6, 1.14)
    assert "EvoApproxLib" in m.provenance and "mul8s_1L2D" in m.provenance
    assert m.relative_power(multipliers.exact()) == pytest.approx(0.2 / 0.425)


def test_exact_multiplier():
    exact = multipliers.exact()
    assert exact.name == "mul8s_1KV6" and exact.is_exact
    assert np.array_equal(exact.lut, multipliers.exact_lut())


@pytest.mark.parametrize("name, canonical", [
    ("mul8s_1KV8", "mul8s_1KV8"),            # v2022 meaning wins over the 2020 name
    ("mul8s_1KVA", "mul8s_1KVA"),
    ("evoapprox2020:mul8s_1KV8", "mul8s_1KV6"),
    ("evoapprox2020:mul8s_1KVA", "mul8s_1KV8"),
    ("mul8s_1KX2", "mul8s_1KVA"),            # 2020 name without a collision
    ("mul8s_1L2D", "mul8s_1L2L"),
    ("1kva", "mul8s_1KVA"),
    ("MUL8S_1L2L", "mul8s_1L2L"),
    ("evoapprox:mul8s_1KV9", "mul8s_1KV9"),
])
def test_name_resolution(name, canonical):
    assert multipliers.get(name).name == canonical


def test_aliases_listed():
    assert multipliers.get("mul8s_1KV6").aliases == ("evoapprox2020:mul8s_1KV8",)
    assert multipliers.get("mul8s_1KVA").aliases == ("mul8s_1KX2", "evoapprox2020:mul8s_1KX2")


def test_presets():
    axmoe8 = [m.name.removeprefix("mul8s_") for m in multipliers.resolve_many(["axmoe8"])]
    assert axmoe8 == ["1KV6", "1KV8", "1KV9", "1KVA", "1KVM", "1KVP", "1L2J", "1L2L"]
    pareto = [m.name.removeprefix("mul8s_") for m in multipliers.resolve_many(["pareto-mae"])]
    assert pareto == ["1KV6", "1KV8", "1KV9", "1KVP", "1L2J", "1L2L", "1L2N", "1L12"]
    both = multipliers.resolve_many(["axmoe8", "pareto-mae", "mitchell"])
    assert len(both) == len({m.name for m in both}) == 11


@pytest.mark.parametrize("name, fragment", [
    ("mul8s_1KZZ", "unknown multiplier"),
    ("1kv", "did you mean"),
    ("drum:x", "integer K"),
    ("mask:q=3", "bad mask spec"),
])
def test_unknown_names_give_clear_errors(name, fragment):
    with pytest.raises(ValueError, match=fragment):
        multipliers.get(name)


def test_npy_files_resolve(tmp_path):
    path = multipliers.save_lut(multipliers.get("1L2J").lut, tmp_path / "mine.npy")
    m = multipliers.get(str(path))
    assert m.name == "mine" and m.kind == "table"
    assert m.sha256 == multipliers.get("1L2J").sha256
