"""modelfile.naming: experts split from real exported and state-dict names, sibling and dense
names, and the names of the nodes axmoe adds."""

import pytest

import models
from modelfile import naming


@pytest.mark.parametrize("name, layer, expert", [
    ("/stages/stages.2/experts.1/experts.1.0/conv1/Conv", "/stages/stages.2/", 1),      # torch.onnx node
    ("/stages/stages.2/experts.3/experts.3.1/conv2/Conv_output_0", "/stages/stages.2/", 3),
    ("blocks.1.mlp.experts.0.fc1.weight", "blocks.1.mlp.", 0),                            # state dict
    ("/blocks/blocks.1/mlp/experts.12/fc2/MatMul", "/blocks/blocks.1/mlp/", 12),
    ("stages.2.experts.3", "stages.2.", 3),                                              # ends the name
])
def test_split_expert(name, layer, expert):
    assert naming.split_expert(name) == (layer, expert)
    assert naming.moe_layer_of(name) == layer and naming.expert_index(name) == expert


@pytest.mark.parametrize("name", [
    "/stem/stem.0/Conv", "/stages/stages.2/gate/w_gate/MatMul", "fc.weight",
    "/stages/stages.2/experts", "experts.x/Conv", "/moe/experts.1x/Conv",
    "axmoe/_stages_stages_2_experts_1_experts_1_0_conv1_Conv/acc_3",   # a rewritten node: no "experts.<e>"
])
def test_names_outside_an_expert(name):
    assert naming.split_expert(name) is None
    assert naming.moe_layer_of(name) is None and naming.expert_index(name) is None


def test_the_first_expert_segment_names_the_layer():
    assert naming.split_expert("a/experts.2/b/experts.5/c") == ("a/", 2)


def test_sibling_names():
    name = "/stages/stages.2/experts.1/experts.1.0/conv1/Conv_output_0_scale"
    assert naming.with_expert(name, 3) == "/stages/stages.2/experts.3/experts.3.0/conv1/Conv_output_0_scale"
    assert naming.with_expert(naming.with_expert(name, 3), 1) == name
    assert naming.with_expert("/fc/Gemm", 3) == "/fc/Gemm"
    assert naming.expert_segment(7) == "experts.7"
    assert naming.split_expert("blocks.1.mlp." + naming.expert_segment(7) + ".fc1.bias") == ("blocks.1.mlp.", 7)


@pytest.mark.parametrize("name, dense", [
    ("stages.2.experts.3.0.conv1.weight", "stages.2.0.conv1.weight"),
    ("blocks.1.mlp.experts.0.fc1.weight", "blocks.1.mlp.fc1.weight"),
    ("stem.0.weight", "stem.0.weight"),
    ("stages.2.gate.w_gate", "stages.2.gate.w_gate"),
])
def test_dense_name(name, dense):
    assert naming.dense_name(name) == dense


@pytest.mark.parametrize("arch, options", [("resnet20", dict(width=4)),
                                           ("vit_small", dict(embed_dim=32, depth=2, num_heads=2, patch_size=8,
                                                              moe_blocks=[1]))])
def test_real_state_dicts(arch, options):
    """Every expert entry of a real MoE model splits into (layer, expert), its experts are
    0..E-1, and its dense name is an entry of the dense model."""
    moe = models.create(arch, "hard", num_classes=10, num_experts=4, **options).state_dict()
    dense_options = {k: v for k, v in options.items() if k != "moe_blocks"}
    dense = models.create(arch, "dense", num_classes=10, **dense_options).state_dict()
    experts: dict[str, set[int]] = {}
    for name in moe:
        split = naming.split_expert(name)
        if split is not None:
            experts.setdefault(split[0], set()).add(split[1])
            assert naming.dense_name(name) in dense, name
    assert experts and all(found == set(range(4)) for found in experts.values())


def test_names_the_pass_and_the_evaluator_add():
    assert naming.safe_name("/stages/stages.2/experts.1/conv1/Conv") == "_stages_stages_2_experts_1_conv1_Conv"
    assert naming.rewrite_scope("/stem/stem.0/Conv") == "axmoe/_stem_stem_0_Conv"
    assert naming.rewrite_scope("/stem/stem.0/Conv").startswith(naming.REWRITE_PREFIX)
    assert naming.lut_name("mul8s_1KV9^T") == "axmoe_lut_mul8s_1KV9_T"
    assert naming.lut_name("drum:4").startswith(naming.LUT_PREFIX)
    assert naming.EVAL_PREFIX == "axmoe_eval/" and not naming.EVAL_PREFIX.startswith(naming.REWRITE_PREFIX)
