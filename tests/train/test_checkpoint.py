"""train.checkpoint: layout, weights-only loading, errors."""

from __future__ import annotations

import pytest
import torch

import models
from train.checkpoint import CheckpointError, build_model, load_checkpoint, load_model, save_checkpoint


def test_roundtrip_with_weights_only(tmp_path):
    torch.manual_seed(0)
    model = models.create("vit_small", "cluster", embed_dim=16, depth=2, num_heads=2, img_size=8, patch_size=4)
    model.blocks[1].mlp.gate.set_centroids(torch.randn(4, 16))
    save_checkpoint(tmp_path / "run" / "checkpoint.pt", {"config": model.axmoe_config,
                                                        "state_dict": model.state_dict(), "epoch": 3})
    raw = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    assert raw["epoch"] == 3 and raw["config"] == model.axmoe_config
    loaded, checkpoint = load_model(tmp_path / "run")
    assert not loaded.training
    x = torch.randn(2, 3, 8, 8)
    model.eval()
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    assert not (tmp_path / "run" / "checkpoint.pt.tmp").exists()


def test_errors(tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint"):
        load_checkpoint(tmp_path)
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"\x00" * 10)
    with pytest.raises(CheckpointError, match="not a loadable"):
        load_checkpoint(bad)
    model = models.create("resnet20", width=4)
    with pytest.raises(CheckpointError, match="does not build"):
        build_model({"config": {"arch": "resnet99"}, "state_dict": {}})
    with pytest.raises(CheckpointError, match="do not fit"):
        build_model({"config": {**model.axmoe_config, "options": {"width": 8}},
                     "state_dict": model.state_dict()})
