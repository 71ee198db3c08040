"""models.upcycle: MoE models initialised from a dense one compute the dense function."""

from __future__ import annotations

import pytest
import torch

import models
from models.upcycle import dense_name, load_dense_into_moe


def test_dense_name():
    assert dense_name("stages.2.experts.3.0.conv1.weight") == "stages.2.0.conv1.weight"
    assert dense_name("blocks.1.mlp.experts.0.fc1.weight") == "blocks.1.mlp.fc1.weight"
    assert dense_name("stem.0.weight") == "stem.0.weight"


@pytest.mark.parametrize("arch, topology", [("resnet20", "cluster"), ("resnet20", "soft"),
                                            ("vgg11_bn", "cluster"), ("vit_small", "cluster")])
def test_identical_experts_reproduce_dense(arch, topology, small, sizes):
    torch.manual_seed(0)
    dense = models.create(arch, **small[arch]).eval()
    moe = models.create(arch, topology, **small[arch])
    load_dense_into_moe(moe, dense.state_dict())
    moe.eval()
    for layer in moe.moe_layers().values():
        if hasattr(layer.gate, "set_centroids"):
            layer.gate.set_centroids(torch.randn_like(layer.gate.centroids))
    x = torch.randn(6, 3, sizes[arch], sizes[arch])
    with torch.no_grad():
        assert torch.allclose(moe(x), dense(x), atol=1e-5)
    for layer in moe.moe_layers().values():
        first = layer.experts[0].state_dict()
        for expert in layer.experts[1:]:
            assert all(torch.equal(first[k], v) for k, v in expert.state_dict().items())


def test_mismatched_models_are_refused():
    dense = models.create("resnet20", width=8)
    with pytest.raises(ValueError, match="shape"):
        load_dense_into_moe(models.create("resnet20", "hard", width=4), dense.state_dict())
    vgg = models.create("vgg11_bn", width_mult=0.0625)
    with pytest.raises(ValueError, match="no place"):
        load_dense_into_moe(models.create("resnet20", "hard", width=4), vgg.state_dict())
