"""Retraining recipes on a tiny seeded hard MoE and the tiny Fashion-MNIST of conftest: router
training with the balancing loss, distillation, validation split and early stopping, and a
killed run resumed bit for bit."""

import json
import logging

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

from axmoe_testing import small_model
from models.datasets import load_dataset
from train.retrain import RetrainError, retrain_approx, split_validation
from train.retrain_cli import main as cli_main
from train.retrain_state import STATE_FILE

logging.getLogger().setLevel(logging.ERROR)
MULT = {"multiplier": "mul8s_1L2L"}


@pytest.fixture(scope="module")
def hard_checkpoint(tmp_path_factory, data_dir):
    model = small_model("resnet20", "hard")
    path = tmp_path_factory.mktemp("hard") / "checkpoint.pt"
    data = load_dataset("fashion-mnist", "test", limit=1, root=data_dir).config()
    torch.save({"config": model.axmoe_config, "state_dict": model.state_dict(), "data": data}, path)
    return path


def run(checkpoint, data_dir, out, **options):
    base = dict(max_steps=4, batch_size=16, lr=1e-3, calib_samples=32, progress=False, data_root=data_dir,
                device="cpu")
    return retrain_approx(checkpoint, MULT, out, **{**base, **options})


def initializers(path):
    return {i.name: numpy_helper.to_array(i) for i in onnx.load(str(path)).graph.initializer}


def events(out, kind):
    return [e for e in map(json.loads, (out / "log.jsonl").read_text().splitlines()) if e["event"] == kind]


def test_router_trains_with_the_balancing_loss_and_frozen_without(hard_checkpoint, data_dir, tmp_path):
    on = run(hard_checkpoint, data_dir, tmp_path / "on")
    off = run(hard_checkpoint, data_dir, tmp_path / "off", router=False)
    before = initializers(tmp_path / "on" / "model.onnx")
    router = [k for k in before if k.startswith("onnx::MatMul")]
    assert len(router) == 1 and on["router"]["trainable"] == ["stages.2.gate.w_gate.weight"]
    assert not np.array_equal(before[router[0]], initializers(tmp_path / "on" / "retrained.onnx")[router[0]])
    assert np.array_equal(before[router[0]], initializers(tmp_path / "off" / "retrained.onnx")[router[0]])
    assert all(e["aux"] > 0 for e in events(tmp_path / "on", "step"))
    assert all(e["aux"] is None for e in events(tmp_path / "off", "step"))
    for metrics in (on, off):
        assert metrics["emulation_same_class"] == 1.0
        share = metrics["max_expert_share"]
        assert share["source"] == "onnxruntime" and set(share["after"]) == {"stages.2.gate"}
        assert 0.25 <= share["after"]["stages.2.gate"] <= 1.0
        load = metrics["expert_load"]["after"]["stages.2.gate"]
        assert sum(load["rows"]) == metrics["test_images"]  # top-1: one expert per image
    # the retrained checkpoint carries the trained router (transposed back to the Linear's layout)
    state = torch.load(tmp_path / "on" / "checkpoint.pt", weights_only=True)["state_dict"]
    trained = initializers(tmp_path / "on" / "retrained.onnx")[router[0]]
    assert np.array_equal(state["stages.2.gate.w_gate.weight"].numpy(), trained.T)


def test_distillation_lut_gradient_and_early_stopping(hard_checkpoint, data_dir, tmp_path):
    out = tmp_path / "kd"
    metrics = run(hard_checkpoint, data_dir, out, max_steps=6, distill=2.0, distill_weight=0.7, gradient="lut",
                  eval_every=1, patience=1)
    assert metrics["emulation_same_class"] == 1.0
    assert metrics["distill"] == {"temperature": 2.0, "weight": 0.7} and metrics["gradient"] == "lut"
    vals = events(out, "validate")
    assert metrics["val_top1"] == max(v["val_top1"] for v in vals)
    assert metrics["best_step"] == max(v["step"] for v in vals if v["val_top1"] == metrics["val_top1"])
    if metrics["stopped"] == "early_stopping":
        assert metrics["steps"] < 6 and len(vals) >= 2
    else:
        assert metrics["steps"] == 6


def test_killed_run_resumes_bit_for_bit(hard_checkpoint, data_dir, tmp_path):
    options = dict(max_steps=6, checkpoint_every=2, distill=2.0)
    run(hard_checkpoint, data_dir, tmp_path / "full", **options)

    def kill(step):
        if step == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run(hard_checkpoint, data_dir, tmp_path / "cut", on_step=kill, **options)
    saved = torch.load(tmp_path / "cut" / STATE_FILE, weights_only=True)
    assert saved["step"] == 2  # lost one step, at most checkpoint_every
    resumed = run(hard_checkpoint, data_dir, tmp_path / "cut", resume=True, **options)
    assert resumed["steps"] == 6
    assert resumed["emulation_same_class"] == 1.0
    full = torch.load(tmp_path / "full" / STATE_FILE, weights_only=True)
    cut = torch.load(tmp_path / "cut" / STATE_FILE, weights_only=True)
    assert full["params"].keys() == cut["params"].keys()
    assert all(torch.equal(full["params"][k], cut["params"][k]) for k in full["params"])
    a, b = initializers(tmp_path / "full" / "retrained.onnx"), initializers(tmp_path / "cut" / "retrained.onnx")
    assert all(np.array_equal(a[k], b[k]) for k in a)
    with pytest.raises(RetrainError, match="lr was"):
        run(hard_checkpoint, data_dir, tmp_path / "cut", resume=True, **{**options, "lr": 0.5})


def test_validation_split_is_seeded_disjoint_and_from_train(data_dir):
    train = load_dataset("fashion-mnist", "train", root=data_dir)
    rest, val = split_validation(train, 0.25, seed=3)
    again, val_again = split_validation(train, 0.25, seed=3)
    _, other = split_validation(train, 0.25, seed=4)
    assert len(val) == 16 and len(rest) == 48
    assert torch.equal(val.images, val_again.images) and not torch.equal(val.images, other.images)
    rows = {bytes(x.numpy().tobytes()) for x in val.images}
    assert not rows & {bytes(x.numpy().tobytes()) for x in rest.images}
    with pytest.raises(RetrainError, match="val_fraction"):
        split_validation(train, 1.0, seed=0)


@pytest.mark.parametrize("flags, message", [
    (["--val-fraction", "1.5"], "--val-fraction must be in (0, 1)"),
    (["--resume"], "--resume: nothing to resume"),
    (["--patience", "2"], "--patience needs --eval-every"),
    (["--distill", "--distill-weight", "2"], "--distill-weight must be in [0, 1]"),
])
def test_cli_user_mistakes_are_one_line_errors(hard_checkpoint, tmp_path, capsys, flags, message):
    argv = ["--retrain-approx", "--from", str(hard_checkpoint), "--multiplier", "mul8s_1L2L",
            "--out", str(tmp_path / "x"), *flags]
    assert cli_main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and "\n" not in err
