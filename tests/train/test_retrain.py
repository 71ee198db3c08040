"""Approximate-aware retraining: the retrained deployed graph and its emulation agree, and the
retrained checkpoint re-exports to the same model."""

import json
import logging

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

from axmoe_testing import small_model
from export.checkpoint import load_for_export, load_quantization_state
from export.exporter import calibration_batches, export_model
from models.datasets import load_dataset
from passes.approximate import approximate
from runtime.ort import session
from train.retrain import retrain_approx

logging.getLogger().setLevel(logging.ERROR)


def _checkpoint(folder, topology):
    model = small_model("resnet20", topology)
    path = folder / "checkpoint.pt"
    data = load_dataset("fashion-mnist", "test", limit=1).config()
    torch.save({"config": model.axmoe_config, "state_dict": model.state_dict(), "data": data}, path)
    return path


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return _checkpoint(tmp_path_factory.mktemp("ckpt"), "hard")


@pytest.fixture(scope="module")
def dense_checkpoint(tmp_path_factory):
    return _checkpoint(tmp_path_factory.mktemp("dense"), "dense")


def initializers(model):
    return {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}


@pytest.mark.parametrize("topology, name", [("hard", "mul8s_1KVA"), ("hard", "mitchell"),  # decomposable, LUT-only
                                            ("dense", "mul8s_1L2L")])
def test_retrained_graph_and_emulation_predict_the_same_class(checkpoint, dense_checkpoint, tmp_path, topology,
                                                              name):
    out = tmp_path / name
    metrics = retrain_approx(checkpoint if topology == "hard" else dense_checkpoint, {"multiplier": name}, out,
                             max_steps=2, batch_size=32, lr=1e-3, eval_limit=128, val_limit=64, calib_samples=32,
                             progress=False)
    assert metrics["steps"] == 2 and metrics["test_images"] == 128
    assert metrics["emulation_same_class"] == 1.0  # invariant 4 on every evaluated image, exactly
    assert metrics["emulation_differs_on"] == []
    assert (metrics["router"]["trained"], metrics["router"]["aux_loss"]) == ((True, True) if topology == "hard"
                                                                             else (False, False))
    before = initializers(onnx.load(str(out / "model.onnx")))
    after = initializers(onnx.load(str(out / "retrained.onnx")))
    changed = [k for k in before if k.endswith("_quantized") and not np.array_equal(before[k], after[k])]
    scales = [k for k in before if k.endswith(("_scale", "_zero_point"))]
    assert changed and all(np.array_equal(before[k], after[k]) for k in scales)  # weights move, scales stay
    assert json.loads((out / "metrics.json").read_text())["after_top1"] == metrics["after_top1"]


def test_retrained_checkpoint_reexports_bit_exactly(checkpoint, tmp_path):
    out = tmp_path / "run"
    retrain_approx(checkpoint, {"multiplier": "mul8s_1KV9"}, out, max_steps=2, batch_size=32, lr=1e-3,
                   eval_limit=32, val_limit=32, calib_samples=32, progress=False)
    model, config, data = load_for_export(out)
    state = load_quantization_state(out)
    train = load_dataset("fashion-mnist", "train", limit=256)
    export_model(model, config, data, tmp_path / "again.onnx", quantization_state=state,
                 calibration_batches=calibration_batches(train.images, data, 64))
    again, retrained = onnx.load(str(tmp_path / "again.onnx")), onnx.load(str(out / "retrained.onnx"))
    a, b = initializers(again), initializers(retrained)
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    x = np.random.default_rng(0).standard_normal((8, 3, 32, 32)).astype(np.float32)
    approx_again, _ = approximate(again, {"multiplier": "mul8s_1KV9"})
    deployed = onnx.load(str(out / "retrained.approx.onnx"))
    run = lambda m: session(m.SerializeToString(), threads=1).run(None, {"input": x})[0]  # noqa: E731
    assert np.array_equal(run(approx_again), run(deployed))
