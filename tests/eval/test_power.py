"""The power model on hand-computed numbers (DESIGN.md, "Normalised power").

P(exact) = P(mul8s_1KV6) = 0.425 mW; P(mul8s_1L2L) = 0.200 mW; P(mul8s_1KVM) = 0.369 mW.
"""

import numpy as np
import pytest

from eval.graph import GraphInfo, MacLayer
from eval.macs import MacCounter
from eval.power import LayerWork, dense_macs_per_image, normalised_power, relative_power, weighted_macs


def test_relative_power_of_catalog_multipliers():
    assert relative_power(None) == 1.0
    assert relative_power("mul8s_1KV6") == 1.0
    assert relative_power("mul8s_1L2L") == pytest.approx(0.2 / 0.425)
    assert relative_power("1KVM") == pytest.approx(0.369 / 0.425)
    assert relative_power("drum:4") is None  # no published power


def test_dense_two_layers():
    # 10 images; layer 1: 100 MACs/image exact, layer 2: 300 MACs/image on 1L2L
    # weighted = 10 * (100 + 300 * 0.2 / 0.425) = 2411.7647...; dense = 10 * 400
    work = [LayerWork("l1", "trunk", 1000, "mul8s_1KV6"), LayerWork("l2", "trunk", 3000, "mul8s_1L2L")]
    weighted, unknown = weighted_macs(work)
    assert unknown == []
    assert weighted == pytest.approx(2411.764705882353)
    assert normalised_power(work, 10, 400) == pytest.approx(0.6029411764705882)


def test_exact_dense_model_is_one_and_uniform_multiplier_scales():
    work = [LayerWork("a", "trunk", 700, None), LayerWork("b", "trunk", 300, "mul8s_1KV6")]
    assert normalised_power(work, 1, 1000) == 1.0
    halved = [LayerWork(w.name, w.role, w.macs, "mul8s_1L2L") for w in work]
    assert normalised_power(halved, 1, 1000) == pytest.approx(0.2 / 0.425)


def test_unknown_power_gives_none_and_names_it():
    work = [LayerWork("a", "trunk", 10, "mitchell"), LayerWork("b", "trunk", 10, "mul8s_1L2L")]
    assert weighted_macs(work) == (None, ["mitchell"])
    assert normalised_power(work, 1, 20) is None


def test_dense_reference_of_moe_layers():
    # trunk 100/image, MoE layer: one expert 50/row, per-token routing with 16 rows per image
    assert dense_macs_per_image(100, {"m": 50}, {"m": 16}) == 100 + 800
    assert dense_macs_per_image(100, {"m": 50}, {}) == 150  # per-image routing by default


def _moe_graph(multiplier: str | None) -> GraphInfo:
    """trunk conv (100 MACs/row), float router (8 MACs/row), 4 experts of one conv (50/row)."""
    layers = [MacLayer("/stem/Conv", "Conv", "conv", "x", "w", "y", "input", macs_per_row=100, multiplier=multiplier),
              MacLayer("/moe/gate/MatMul", "MatMul", "matmul", "z", "wg", "g", "pooled", moe_layer="/moe/",
                       macs_per_row=8)]
    for e in range(4):
        layers.append(MacLayer(f"/moe/experts.{e}/Conv", "Conv", "conv", f"x{e}", f"w{e}", f"y{e}", f"rows{e}",
                               multiplier=multiplier, moe_layer="/moe/", expert=e, macs_per_row=50))
    return GraphInfo(layers, "input", "logits", {})


def test_hard_moe_counts_routed_rows_and_router():
    info = _moe_graph("mul8s_1KVM")
    counter = MacCounter(info)
    assert info.proxies() == ["input", "pooled", "rows0", "rows1", "rows2", "rows3"]
    # two batches (6 + 4 images); top-1 routing: 6 rows to expert 0, 4 to expert 1 in all
    shape = lambda n: np.array([n, 16, 8, 8])  # noqa: E731
    counter.add(6, [shape(6), np.array([6, 16]), shape(4), shape(2), shape(0), shape(0)])
    counter.add(4, [shape(4), np.array([4, 16]), shape(2), shape(2), shape(0), shape(0)])
    load = counter.expert_load()["moe"]
    assert load["rows"] == [6, 4, 0, 0]
    assert load["share"] == [0.6, 0.4, 0.0, 0.0]
    assert load["experts_per_row"] == 1.0
    assert load["max_over_mean"] == pytest.approx(6 / 2.5)
    # active = trunk 10*100 + router 10*8 + experts 10*50 = 1580
    # weighted = 1000 * 0.369/0.425 + 80 (float router at P(exact)) + 500 * 0.369/0.425 = 1382.3529...
    # dense = 100 + 50 per image; P = 1382.3529 / 1500
    summary = counter.summary()
    assert summary["active_macs_per_image"] == 158.0
    assert summary["dense_macs_per_image"] == 150.0
    assert summary["macs_by_role"] == {"trunk": 1000, "router": 80, "expert": 500}
    assert summary["weighted_macs_per_image"] == pytest.approx(138.23529411764707)
    assert summary["normalised_power"] == pytest.approx(0.9215686274509803)


def test_soft_moe_runs_every_expert():
    info = _moe_graph(None)
    counter = MacCounter(info)
    counter.add(10, [np.array([10, 3, 32, 32]), np.array([10, 16])] + [np.array([10, 16, 8, 8])] * 4)
    # (100 + 8 + 4 * 50) / (100 + 50)
    assert counter.summary()["normalised_power"] == pytest.approx(308 / 150)
    assert counter.expert_load()["moe"]["share"] == [0.25] * 4
    # a given dense reference replaces the inferred one
    assert counter.summary(dense_per_image=308)["normalised_power"] == pytest.approx(1.0)
