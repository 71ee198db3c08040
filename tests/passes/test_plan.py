"""Plans: defaults, overrides by glob / op type / layer / expert, keep_exact, MaxNNScore."""

import numpy as np
import pytest
from onnx import numpy_helper

from passes import PlanError, load_plan, plan_from_dict
from passes.approximate import approximate
from passes.plan import expert_index, moe_layer_of

from axmoe_testing import assignment, run_oracle, run_ort


def statuses(report):
    return {n.node: n for n in report.nodes}


def test_keep_exact_keywords_and_globs(int8_resnet):
    _, report = approximate(int8_resnet, {"multiplier": "mul8s_1L2L",
                                          "keep_exact": ["first_conv", "classifier", "*shortcut*"]})
    nodes = [n for n in report.nodes if n.status != "skipped"]
    assert nodes[0].status == "exact" and nodes[0].rule == "keep_exact" and nodes[0].op_type == "Conv"
    assert nodes[-1].status == "exact" and nodes[-1].op_type == "Gemm"
    assert all(n.status == "exact" for n in nodes if "shortcut" in n.node)
    assert sum(n.status == "rewritten" for n in nodes) > 30


def test_overrides_first_match_wins(int8_resnet):
    plan = {"multiplier": "mul8s_1L2L", "overrides": [
        {"match": {"name": "*experts.2*"}, "multiplier": "mul8s_1KVA"},
        {"match": {"op_type": "Gemm"}, "multiplier": "exact"},
        {"match": {"expert": 3}, "multiplier": "mitchell"},
        {"match": {"layer": [0, 1]}, "lowering": "lut"},
    ]}
    model, report = approximate(int8_resnet, plan)
    for n in report.nodes:
        if n.status == "skipped":
            continue
        if "experts.2" in n.node:
            assert n.multiplier == "mul8s_1KVA" and n.rule == "override 0"
        elif n.op_type == "Gemm":
            assert n.status == "exact"
        elif expert_index(n.node) == 3:
            assert n.multiplier == "mitchell" and n.lowering == "lut"
    layer_nodes = [n for n in report.nodes if n.status != "skipped"][:2]
    assert all(n.lowering == "lut" for n in layer_nodes)
    x = np.random.default_rng(3).standard_normal((6, 3, 32, 32)).astype(np.float32)
    assert np.array_equal(run_ort(model, x), run_oracle(int8_resnet, model, x))


def test_exact_experts_maxnnscore_keeps_the_largest_neuron_norm_expert(int8_resnet):
    _, report = approximate(int8_resnet, {"multiplier": "mul8s_1L2L",
                                          "exact_experts": {"score": "maxnnscore", "fraction": 0.25}})
    kept = {expert_index(n.node) for n in report.nodes if n.rule == "exact_experts (maxnnscore)"}
    assert len(kept) == 1
    # independent computation: max over output filters of ||W_e[r]||_2 of each expert's first conv
    inits = {i.name: numpy_helper.to_array(i) for i in int8_resnet.graph.initializer}
    scores = {}
    for e in range(4):
        prefix = f"stages.2.experts.{e}."
        first = sorted(n for n in inits if n.startswith(prefix) and n.endswith("conv1.weight_quantized"))[0]
        w = inits[first].astype(np.float64) * inits[first.replace("_quantized", "_scale")][:, None, None, None]
        scores[e] = np.linalg.norm(w.reshape(w.shape[0], -1), axis=1).max()
    assert kept == {max(scores, key=scores.get)}
    assert all(moe_layer_of(n.node) for n in report.nodes if n.rule == "exact_experts (maxnnscore)")


def test_operand_order_wx_uses_the_transposed_table(int8_resnet, images):
    xw, _ = approximate(int8_resnet, {"multiplier": "mul8s_1KVM"})  # (a & ~1) * b: not symmetric
    wx, _ = approximate(int8_resnet, {"multiplier": "mul8s_1KVM", "operand_order": "wx"})
    a, b = run_ort(xw, images), run_ort(wx, images)
    assert not np.array_equal(a, b)
    assert np.array_equal(b, run_oracle(int8_resnet, wx, images, operand_order="wx"))


def test_plan_yaml(tmp_path, int8_resnet):
    path = tmp_path / "plan.yaml"
    path.write_text("multiplier: mul8s_1KV9\nlowering: lut\nkeep_exact: [classifier]\n"
                    "overrides:\n  - match: {expert: [0, 1]}\n    multiplier: exact\n")
    plan = load_plan(path)
    model, report = approximate(int8_resnet, plan)
    entries = assignment(model)
    assert {e["multiplier"] for e in entries.values()} == {"mul8s_1KV9", "mul8s_1KV6"}
    assert plan.source["overrides"][0]["match"] == {"expert": [0, 1]}


@pytest.mark.parametrize("data, fragment", [
    ({"multiplier": "mul8s_nope"}, "unknown multiplier"),
    ({"multiplier": "exact", "lowering": "fast"}, "unknown lowering"),
    ({"multiplier": "exact", "colour": 1}, "unknown plan key"),
    ({"overrides": [{"match": {"size": 3}, "multiplier": "exact"}]}, "unknown match key"),
    ({"overrides": [{"match": {"expert": 1}}]}, "neither multiplier nor lowering"),
    ({"exact_experts": {"score": "random"}}, "maxnnscore"),
    ({"exact_experts": {"fraction": 2}}, "fraction"),
    ({"operand_order": "ab"}, "operand_order"),
    ({"multiplier": "exact", "compensate": "both"}, "compensate: unknown mode 'both'; valid: none, bias"),
    ({"multiplier": "exact", "compensate": False}, "compensate: unknown mode False"),  # YAML's bare `no`
    ({"multiplier": "exact", "compensate": "Linear"}, "compensate: unknown mode 'Linear'; valid: .*linear"),
    ({"overrides": [{"match": {"expert": 1}, "compensate": "weight"}]}, "override 0: compensate: unknown mode"),
    ({"overrides": [{"match": {"expert": 1}, "compensat": "bias"}]}, "override 0: unknown key\\(s\\) compensat"),
])
def test_plan_errors(data, fragment):
    with pytest.raises(PlanError, match=fragment):
        plan_from_dict(data)


def test_plan_file_errors(tmp_path):
    with pytest.raises(PlanError, match="no such plan"):
        load_plan(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("multiplier: [unclosed\n")
    with pytest.raises(PlanError, match="not valid YAML"):
        load_plan(bad)


def test_compensate_modes_per_override(int8_resnet):
    """`assign` gives every op its mode: the plan's, the first matching override's, and the
    pass uses the same assignment for the multiplier (keep_exact included)."""
    from passes.calibration import candidates
    from passes.plan import assign

    plan = plan_from_dict({"multiplier": "mul8s_1KVA", "compensate": "bias", "keep_exact": ["classifier"],
                           "overrides": [{"match": {"expert": 1}, "compensate": "weights+bias"},
                                         {"match": {"layer": 0}, "multiplier": "mul8s_1L2L", "compensate": "none"}]})
    assert plan.compensates() and plan.overrides[0].multiplier is None
    ops = candidates(int8_resnet)
    got = assign(plan, ops)
    assert got[ops[0].name].compensate == "none" and got[ops[0].name].multiplier.name == "mul8s_1L2L"
    assert got[ops[-1].name].reason == "keep_exact" and got[ops[-1].name].multiplier.is_exact
    for op in ops[1:-1]:
        want = "weights+bias" if expert_index(op.name) == 1 else "bias"
        assert got[op.name].compensate == want and got[op.name].multiplier.name == "mul8s_1KVA"
    assert {got[op.name].compensate for op in ops} == {"none", "bias", "weights+bias"}


def test_plans_without_compensate_are_as_before():
    plan = plan_from_dict({"multiplier": "mul8s_1KVA", "overrides": [{"match": {"layer": 0}, "lowering": "lut"}]})
    assert plan.compensate == "none" and not plan.compensates() and plan.overrides[0].compensate is None
    assert "compensate" not in plan.to_dict()
    assert not plan_from_dict({"compensate": "none", "overrides": [{"match": {"layer": 0}, "compensate": "none"}]}
                              ).compensates()
    assert plan_from_dict({"overrides": [{"match": {"layer": 0}, "compensate": "bias"}]}).compensates()
