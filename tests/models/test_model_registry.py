"""models.registry: names, options, errors, configs as plain data."""

from __future__ import annotations

import json

import pytest
import torch

import models
from models.config import ModelConfigError


def test_names():
    assert models.list_archs() == ["resnet20", "vgg11_bn", "vgg19_bn", "vit_small"]
    assert models.list_topologies() == ["dense", "hard", "soft", "cluster"]
    pairs = models.list_models()
    assert len(pairs) == 16 and len(set(pairs)) == 16


@pytest.mark.parametrize("call, names", [
    (lambda: models.create("resnet21"), ["resnet20", "vgg11_bn", "vit_small"]),
    (lambda: models.create("resnet20", "sparse"), ["dense", "hard", "soft", "cluster"]),
    (lambda: models.create("resnet20", "hard", widht=8), ["width", "num_experts", "top_k"]),
    (lambda: models.create("resnet20", "dense", top_k=2), ["width", "in_chans"]),
    (lambda: models.create("resnet20", "soft", slots_per_expert=2), ["num_experts"]),
    (lambda: models.create("resnet20", "dense", moe_stages=[1]), ["width"]),
])
def test_invalid_names_name_the_valid_ones(call, names):
    with pytest.raises(ModelConfigError) as info:
        call()
    message = str(info.value)
    assert "\n" not in message
    for name in names:
        assert name in message
    assert isinstance(info.value, ValueError)


def test_suggests_close_names():
    with pytest.raises(ModelConfigError, match="did you mean 'resnet20'"):
        models.create("resnet2O")


@pytest.mark.parametrize("options, fragment", [
    ({"top_k": 5}, "top_k"),
    ({"num_experts": 0}, "num_experts"),
    ({"moe_stages": [3]}, "moe_stages"),
    ({"moe_stages": []}, "moe_stages"),
    ({"width": "wide"}, "integer"),
    ({"noisy_gating": 1}, "true or false"),
    ({"aux_loss_weight": -1.0}, "aux_loss_weight"),
])
def test_invalid_values(options, fragment):
    with pytest.raises(ModelConfigError, match=fragment):
        models.create("resnet20", "hard", **options)


def test_vit_options_checked():
    with pytest.raises(ModelConfigError, match="patch_size"):
        models.create("vit_small", img_size=30, patch_size=4)
    with pytest.raises(ModelConfigError, match="moe_blocks"):
        models.create("vit_small", "hard", depth=4, moe_blocks=[4])
    with pytest.raises(ModelConfigError, match="num_classes"):
        models.create("vit_small", num_classes=0)


def test_list_options_has_defaults():
    opts = models.list_options("vit_small", "soft")
    assert opts["embed_dim"] == 384 and opts["depth"] == 12 and opts["num_heads"] == 6
    assert opts["num_experts"] == 4 and opts["slots_per_expert"] == 1
    assert opts["moe_blocks"] == [1, 3, 5, 7, 9, 11]
    assert "top_k" not in opts
    assert models.list_options("resnet20", "hard")["top_k"] == 1
    assert "moe_stages" not in models.list_options("resnet20", "dense")


@pytest.mark.parametrize("arch, topology", [("resnet20", "hard"), ("vgg11_bn", "cluster"),
                                            ("vit_small", "soft"), ("vit_small", "dense")])
def test_config_is_plain_data_and_rebuilds(arch, topology, small):
    torch.manual_seed(0)
    model = models.create(arch, topology, num_classes=5, **small[arch])
    config = model.axmoe_config
    assert json.loads(json.dumps(config)) == config
    assert config["arch"] == arch and config["topology"] == topology and config["num_classes"] == 5
    again = models.create(**config)
    assert again.axmoe_config == config
    again.load_state_dict(model.state_dict())
    # keyword options override the `options` dict
    assert models.create(**{**config, "options": config["options"]}).axmoe_config == config


def test_full_size_parameter_counts():
    counts = {}
    for arch in ("resnet20", "vgg11_bn", "vgg19_bn", "vit_small"):
        model = models.create(arch, num_classes=100)
        counts[arch] = sum(p.numel() for p in model.parameters())
    # ResNet-20 ~0.28 M, VGG11_bn ~9.8 M, VGG19_bn ~20.6 M (CIFAR, 100 classes,
    # as chenyaofo/pytorch-cifar-models); ViT-S ~21.4 M
    assert 0.27e6 < counts["resnet20"] < 0.29e6
    assert 9.7e6 < counts["vgg11_bn"] < 9.9e6
    assert 20.5e6 < counts["vgg19_bn"] < 20.7e6
    assert 21.2e6 < counts["vit_small"] < 21.5e6
