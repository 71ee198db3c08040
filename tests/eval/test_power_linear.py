"""The `linear` compensation term in the power model: its reduction's additions are listed per
layer (routed rows only for experts) and in total, with 0 multiplies; power, MACs and every
other number are those of the same model without the term."""

import json

import numpy as np
import pytest

from eval.graph import GraphInfo, MacLayer
from eval.macs import MacCounter
from modelfile import metadata


def _graph(with_linear: bool) -> GraphInfo:
    layers = [MacLayer("stem", "Conv", "conv", "input", "w", "y", "input", multiplier="mul8s_1KVM", macs_per_row=100),
              MacLayer("/moe/experts.0/Conv", "Conv", "conv", "x0", "w0", "y0", "rows0", multiplier="mul8s_1KVM",
                       moe_layer="/moe/", expert=0, macs_per_row=50),
              MacLayer("/moe/experts.1/Conv", "Conv", "conv", "x1", "w1", "y1", "rows1", multiplier="mul8s_1KVM",
                       moe_layer="/moe/", expert=1, macs_per_row=50)]
    assignment = {l.name: {"multiplier": "mul8s_1KVM", "lowering": "lut"} for l in layers}
    if with_linear:  # per batch row: one K-sum per output pixel, as the pass records it
        assignment["stem"].update(linear=True, linear_additions=25)
        assignment["/moe/experts.1/Conv"].update(linear=True, linear_additions=10)
    return GraphInfo(layers, "input", "logits", {metadata.ASSIGNMENT.name: json.dumps(assignment)})


def _summary(with_linear: bool) -> dict:
    counter = MacCounter(_graph(with_linear))
    counter.add(10, [np.array([10, 3, 8, 8]), np.array([7, 4, 4, 4]), np.array([3, 4, 4, 4])])
    return counter.summary()


def test_linear_additions_are_listed_and_cost_no_multiplies():
    plain, linear = _summary(False), _summary(True)
    assert "linear_additions_per_image" not in plain and all("linear_additions" not in l for l in plain["layers"])
    by_name = {l["name"]: l for l in linear["layers"]}
    assert by_name["stem"]["linear_additions"] == 10 * 25
    assert by_name["/moe/experts.1/Conv"]["linear_additions"] == 3 * 10  # the 3 rows routed to it
    assert "linear_additions" not in by_name["/moe/experts.0/Conv"]
    assert linear["linear_additions_per_image"] == pytest.approx((250 + 30) / 10)
    assert linear["linear_multiplies"] == 0
    for key in ("normalised_power", "active_macs_per_image", "weighted_macs_per_image", "macs_by_role"):
        assert linear[key] == plain[key]
