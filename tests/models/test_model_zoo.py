"""All 16 (arch, topology) pairs: build small, forward/backward, expert load, eval determinism."""

from __future__ import annotations

import pytest
import torch

import models
from models.moe import MoEBase

BATCH = 4


@pytest.mark.parametrize("arch, topology", models.list_models())
def test_builds_trains_and_reports_load(arch, topology, small, sizes):
    SMALL, SIZE = small, sizes
    torch.manual_seed(0)
    model = models.create(arch, topology, num_classes=7, **SMALL[arch])
    x = torch.randn(BATCH, 3, SIZE[arch], SIZE[arch])
    model.train()
    logits = model(x)
    assert logits.shape == (BATCH, 7) and torch.isfinite(logits).all()
    aux = model.aux_loss()
    assert aux.shape == () and torch.isfinite(aux)
    if topology != "hard":
        assert aux == 0
    (torch.nn.functional.cross_entropy(logits, torch.arange(BATCH) % 7) + aux).backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)

    load = model.expert_load()
    if topology == "dense":
        assert load == {}
        assert not any(isinstance(m, MoEBase) for m in model.modules())
        return
    expected_layers = 1 if arch != "vit_small" else 2  # ViT depth 4: MoE in blocks 1 and 3
    assert len(load) == expected_layers
    tokens = (SIZE[arch] // 4) ** 2 + 1 if arch == "vit_small" else 1
    for counts in load.values():
        assert counts.dtype == torch.int64 and counts.shape == (4,)
        if topology == "hard":
            rows = BATCH * tokens if arch == "vit_small" else BATCH
            assert counts.sum() == rows  # top-1: every row to exactly one expert
        elif topology == "soft":
            assert (counts == BATCH).all()  # every expert sees every image (CNN) / its slot (ViT)
        else:
            assert counts.sum() == BATCH  # cluster: every image to exactly one expert


@pytest.mark.parametrize("arch, topology", models.list_models())
def test_eval_is_deterministic(arch, topology, small, sizes):
    SMALL, SIZE = small, sizes
    torch.manual_seed(1)
    model = models.create(arch, topology, num_classes=3, **SMALL[arch]).eval()
    x = torch.randn(BATCH, 3, SIZE[arch], SIZE[arch])
    with torch.no_grad():
        first, second = model(x), model(x)
        load = {k: v.clone() for k, v in model.expert_load().items()}
        model(x)
    assert torch.equal(first, second)
    assert all(torch.equal(load[k], v) for k, v in model.expert_load().items())


def test_same_seed_same_model(small):
    SMALL = small
    for arch, topology in (("resnet20", "hard"), ("vit_small", "soft")):
        torch.manual_seed(3)
        a = models.create(arch, topology, **SMALL[arch]).state_dict()
        torch.manual_seed(3)
        b = models.create(arch, topology, **SMALL[arch]).state_dict()
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_experts_are_copies_of_the_chosen_stage():
    model = models.create("resnet20", "hard", width=4, moe_stages=[1, 2], num_experts=3)
    assert list(model.moe_layers()) == ["stages.1", "stages.2"]
    dense = models.create("resnet20", width=4)
    for name in ("stages.1", "stages.2"):
        layer = model.get_submodule(name)
        stage = dense.get_submodule(name)
        assert len(layer.experts) == 3
        for expert in layer.experts:
            assert [tuple(p.shape) for p in expert.parameters()] == [tuple(p.shape) for p in stage.parameters()]
    # experts start independently initialised (hard MoE trains from scratch)
    e0, e1 = model.stages[2].experts[0], model.stages[2].experts[1]
    assert not torch.equal(e0[0].conv1.weight, e1[0].conv1.weight)


def test_vit_moe_uses_timm_extension_points(small):
    SMALL = small
    from timm.layers import Mlp
    from timm.models.vision_transformer import Block, VisionTransformer
    from models.moe import MoEMlp
    from models.soft_moe import SoftMoEMlp
    model = models.create("vit_small", "hard", **SMALL["vit_small"])
    assert isinstance(model, VisionTransformer)
    assert all(isinstance(b, Block) for b in model.blocks)
    kinds = [type(b.mlp) for b in model.blocks]
    assert kinds == [Mlp, MoEMlp, Mlp, MoEMlp]
    assert all(isinstance(e, Mlp) for e in model.blocks[1].mlp.experts)
    soft = models.create("vit_small", "soft", **{**SMALL["vit_small"], "moe_blocks": [0, 2]})
    assert [type(b.mlp) for b in soft.blocks] == [SoftMoEMlp, Mlp, SoftMoEMlp, Mlp]
    # timm's initialiser leaves the hard gate's noise weights at zero (our init_weights hook)
    assert torch.count_nonzero(model.blocks[1].mlp.gate.w_noise.weight) == 0


def test_trunk_is_upstream_of_first_moe_layer(small):
    SMALL = small
    model = models.create("resnet20", "cluster", width=4)
    trunk = {id(p) for p in model.trunk_parameters()}
    names = {n for n, p in model.named_parameters() if id(p) in trunk}
    assert names and all(n.startswith(("stem.", "stages.0.", "stages.1.")) for n in names)
    vit = models.create("vit_small", "cluster", **SMALL["vit_small"])
    names = {n for n, p in vit.named_parameters() if id(p) in {id(q) for q in vit.trunk_parameters()}}
    assert {"cls_token", "pos_embed"} <= names
    assert all(n.startswith(("patch_embed.", "blocks.0.", "cls_token", "pos_embed")) for n in names)
