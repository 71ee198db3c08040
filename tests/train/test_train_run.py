"""train.run: determinism, resume, the cluster recipe, upcycling, ViT runs (tiny, in-process)."""

from __future__ import annotations

import json

import pytest
import torch

import models
from train.args import parse_args
from train.checkpoint import load_checkpoint, load_model
from train.run import run


def _state(path):
    return load_checkpoint(path)["state_dict"]


def _equal(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_same_seed_same_weights(tiny_args, tmp_path):
    run(parse_args(tiny_args("--topology", "hard", "--max-steps", "2", out=tmp_path / "a")))
    run(parse_args(tiny_args("--topology", "hard", "--max-steps", "2", out=tmp_path / "b")))
    run(parse_args(tiny_args("--topology", "hard", "--max-steps", "2", "--seed", "1", out=tmp_path / "c")))
    assert _equal(_state(tmp_path / "a"), _state(tmp_path / "b"))
    assert not _equal(_state(tmp_path / "a"), _state(tmp_path / "c"))


def test_resume_repeats_an_uninterrupted_run(tiny_args, tmp_path):
    full = run(parse_args(tiny_args("--topology", "hard", "--epochs", "2", out=tmp_path / "full")))
    # the same run stopped after its first epoch (4 steps), then resumed to 2 epochs
    run(parse_args(tiny_args("--topology", "hard", "--epochs", "2", "--max-steps", "4", out=tmp_path / "part")))
    assert load_checkpoint(tmp_path / "part")["epoch"] == 1
    resumed = run(parse_args(tiny_args("--topology", "hard", "--epochs", "2", "--resume", out=tmp_path / "part")))
    assert resumed["steps"] == full["steps"] == 8 and resumed["epochs"] == 2
    assert _equal(_state(tmp_path / "full"), _state(tmp_path / "part"))
    events = [json.loads(x)["event"] for x in (tmp_path / "part" / "log.jsonl").read_text().splitlines()]
    assert "resume" in events


def test_cluster_two_phase_recipe(tiny_args, tmp_path):
    out = tmp_path / "cluster"
    metrics = run(parse_args(tiny_args("--topology", "cluster", "--epochs", "1", "--dense-epochs", "1",
                                       "--kmeans-samples", "48", out=out)))
    dense_state = _state(out / "dense")
    assert load_checkpoint(out / "dense")["config"]["topology"] == "dense"
    checkpoint = load_checkpoint(out)
    assert checkpoint["phase"] == "experts" and checkpoint["config"]["topology"] == "cluster"
    report = checkpoint["prepared"]["kmeans"]["stages.2"]
    assert report["points"] == 48 and sum(report["cluster_sizes"]) == 48
    state = checkpoint["state_dict"]
    centroids = state["stages.2.gate.centroids"]
    assert centroids.shape == (4, 8) and centroids.abs().sum() > 0
    # trunk frozen: stem and stages 0-1 (weights and BN statistics) are the dense ones
    for name, value in dense_state.items():
        if name.startswith(("stem.", "stages.0.", "stages.1.")):
            assert torch.equal(state[name], value), name
    # experts started from the dense stage and were trained apart from it
    assert not torch.equal(state["stages.2.experts.0.0.conv1.weight"], dense_state["stages.2.0.conv1.weight"])
    assert metrics["dense_phase"]["steps"] == 4 and "test_acc" in metrics["dense_phase"]
    # the centroids route: k-means sizes are not all on one expert
    assert max(report["cluster_sizes"]) < 48
    model, _ = load_model(out)
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        model(x)
    assert model.expert_load()["stages.2"].sum() == 4


def test_cluster_from_existing_dense_and_train_trunk(tiny_args, tmp_path):
    run(parse_args(tiny_args("--max-steps", "2", out=tmp_path / "dense")))
    metrics = run(parse_args(tiny_args("--topology", "cluster", "--init-from", str(tmp_path / "dense"),
                                       "--max-steps", "2", "--train-trunk", "--kmeans-samples", "32",
                                       out=tmp_path / "c")))
    assert not (tmp_path / "c" / "dense").exists()
    assert metrics["dense_phase"]["init_from"] == str(tmp_path / "dense")
    state, dense = _state(tmp_path / "c"), _state(tmp_path / "dense")
    assert not torch.equal(state["stem.0.weight"], dense["stem.0.weight"])


def test_hard_moe_upcycled_from_dense(tiny_args, tmp_path):
    run(parse_args(tiny_args("--max-steps", "1", out=tmp_path / "dense")))
    run(parse_args(tiny_args("--topology", "hard", "--init-from", str(tmp_path / "dense"),
                             "--max-steps", "1", "--lr", "1e-9", out=tmp_path / "hard")))
    state, dense = _state(tmp_path / "hard"), _state(tmp_path / "dense")
    for e in range(4):
        assert torch.allclose(state[f"stages.2.experts.{e}.0.conv2.weight"], dense["stages.2.0.conv2.weight"])


@pytest.mark.parametrize("topology", ["hard", "soft", "cluster"])
def test_vit_runs(topology, data_dir, tmp_path):
    argv = ["--arch", "vit_small", "--topology", topology, "--data-dir", str(data_dir),
            "--model-opt", "embed_dim=32", "--model-opt", "depth=2", "--model-opt", "num_heads=2",
            "--image-size", "16", "--batch-size", "16", "--max-steps", "2", "--kmeans-samples", "32",
            "--out", str(tmp_path / topology), "--no-progress", "--dense-epochs", "1", "--threads", "1",
            "--device", "cpu"]
    metrics = run(parse_args(argv))
    config = metrics["config"]
    assert config["options"]["img_size"] == 16 and config["options"]["patch_size"] == 2
    assert config["options"]["moe_blocks"] == [1]
    model, checkpoint = load_model(tmp_path / topology)
    assert checkpoint["optimizer"]["param_groups"][0]["weight_decay"] == 0.05  # AdamW for ViT
    assert isinstance(model, models.create("vit_small", **{k: v for k, v in config["options"].items()
                                                          if k in ("img_size", "patch_size", "embed_dim",
                                                                   "depth", "num_heads")}).__class__)


def test_learns_the_fixture(tiny_args, tmp_path):
    # 64 images, a bright square per class: a few epochs at a sane lr fit them
    metrics = run(parse_args(tiny_args("--epochs", "12", "--no-augment", "--lr", "0.05",
                                       out=tmp_path / "learn")))
    assert metrics["last_epoch"]["train_acc"] > 0.5
