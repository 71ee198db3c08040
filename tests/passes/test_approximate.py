"""The approximation pass on an exported model: lowerings agree with each other and the oracle."""

import numpy as np
import onnx
import pytest

import multipliers
from modelfile import metadata
from modelfile.naming import LUT_PREFIX
from passes.approximate import approximate
from passes.reasons import Reason

from axmoe_testing import assignment, run_oracle, run_ort

CATALOG = list(multipliers.catalog())


@pytest.mark.parametrize("name", CATALOG)
def test_decomposed_equals_lut_equals_oracle(int8_resnet, images, name):
    outs = {}
    for lowering in ("lut", "decomposed"):
        model, report = approximate(int8_resnet, {"multiplier": name, "lowering": lowering})
        onnx.checker.check_model(model)
        summary = report.summary()
        if multipliers.get(name).is_exact:
            assert summary.get("exact") == 43 and not summary["lowerings"]
        else:
            assert summary["lowerings"] == {lowering: 43}
        outs[lowering] = run_ort(model, images)
    assert np.array_equal(outs["lut"], outs["decomposed"])
    assert np.array_equal(outs["lut"], run_oracle(int8_resnet, model, images))


def test_exact_multiplier_leaves_outputs_identical(int8_resnet, images):
    base = run_ort(int8_resnet, images)
    for lowering in ("auto", "lut", "decomposed"):
        model, _ = approximate(int8_resnet, {"multiplier": "exact", "lowering": lowering})
        assert np.array_equal(run_ort(model, images), base)


@pytest.mark.parametrize("name", ["mitchell", "drum:4"])
def test_non_decomposable_multipliers_use_the_lut(int8_resnet, images, name):
    model, report = approximate(int8_resnet, {"multiplier": name})
    assert report.summary()["lowerings"] == {"lut": 43}
    assert any(n.op_type == "ApproxConvInteger" for n in model.graph.node)
    assert np.array_equal(run_ort(model, images), run_oracle(int8_resnet, model, images))
    _, report = approximate(int8_resnet, {"multiplier": name, "lowering": "decomposed"})
    reasons = [n.reason for n in report.nodes if "float" not in n.reason]  # all but the float router
    assert len(reasons) == 43 and all("no exact decomposition" in r for r in reasons)


def test_auto_lowering_rule(int8_resnet):
    _, report = approximate(int8_resnet, {"multiplier": "mul8s_1L2L"})
    assert {n.lowering for n in report.nodes if n.status == "rewritten"} == {"decomposed"}
    _, report = approximate(int8_resnet, {"multiplier": "mul8s_1KVA"})
    by_op = {(n.op_type, n.lowering) for n in report.nodes if n.status == "rewritten"}
    assert by_op == {("Conv", "lut"), ("Gemm", "decomposed")}


def test_mask_multiplier_keeps_the_fused_qdq_structure(int8_resnet):
    model, _ = approximate(int8_resnet, {"multiplier": "mul8s_1L2L", "lowering": "decomposed"})
    ops = [n.op_type for n in model.graph.node]
    assert ops.count("Conv") == sum(1 for n in int8_resnet.graph.node if n.op_type == "Conv")
    assert "BitwiseAnd" in ops and "ConvInteger" not in ops and "ApproxConvInteger" not in ops


def test_lut_is_one_shared_initializer(int8_resnet):
    model, _ = approximate(int8_resnet, {"multiplier": "mul8s_1KVA", "lowering": "lut"})
    luts = [i for i in model.graph.initializer if i.name.startswith(LUT_PREFIX)]
    assert len(luts) == 1 and list(luts[0].dims) == [256, 256]


def test_report_and_metadata(int8_resnet):
    model, report = approximate(int8_resnet, {"multiplier": "mul8s_1KV9"})
    data = report.to_dict()
    assert data["summary"]["candidates"] == 44
    (skipped,) = report.skipped  # the MoE router stays float
    assert "float" in skipped.reason and skipped.reason_code == Reason.FLOAT_ACTIVATION.code
    assert data["nodes"][[n.node for n in report.nodes].index(skipped.node)]["reason_code"] == "float_activation"
    conv = next(n for n in data["nodes"] if n["op_type"] == "Conv")
    assert conv["multiplier"] == "mul8s_1KV9" and conv["terms"] == 4 and conv["reduction"] == 27
    assert conv["macs_per_row"] == 27 * 4 * 32 * 32
    assert metadata.get(model, metadata.PLAN)["multiplier"] == "mul8s_1KV9"
    assert len(assignment(model)) == 43
