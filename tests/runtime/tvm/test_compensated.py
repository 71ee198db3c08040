"""A compensated model (`passes.compensate` through the pass: tuned int8 weights, corrected
int32 biases) runs bit for bit the same in TVM as in onnxruntime, and as the retraining
emulation of the compensated int8 model: compensation only changes integers every runtime
already reads."""

import numpy as np
import onnx
import torch

import multipliers
import runtime.tvm
from axmoe_testing import run_ort
from export.emulation import QDQEmulation
from modelfile import metadata
from passes import calibration
from passes.approximate import approximate
from passes.compensate import compensate


def test_compensated_model_equals_onnxruntime_and_the_emulation(int8_model, images, tmp_path):
    int8 = int8_model("resnet20", "hard")
    calib = np.random.default_rng(5).standard_normal((32, 3, 32, 32)).astype(np.float32)
    stats = calibration.collect(int8, calib)
    plan = {"multiplier": "mul8s_1KVA", "lowering": "lut", "compensate": "weights+bias"}
    model, report = approximate(int8, plan, stats)
    record = report.compensation
    assert sum(n["status"] == "compensated" for n in record["nodes"]) > 10
    assert sum(n.get("weights_changed", 0) for n in record["nodes"]) > 0
    path = tmp_path / "compensated.onnx"
    onnx.save(model, str(path))
    want = run_ort(model, images)
    got = runtime.tvm.session(str(path), threads=2).run(images)
    assert got.dtype == want.dtype and np.array_equal(got, want), \
        f"{np.sum((got != want).any(axis=1))} of {len(images)} images differ"
    tables = {name: multipliers.get(e["multiplier"]) for name, e in metadata.get(model, metadata.ASSIGNMENT).items()}
    tuned, _ = compensate(int8, tables, stats, "weights+bias")
    with torch.no_grad():
        emulated = QDQEmulation(tuned, multipliers=tables)(torch.from_numpy(images)).numpy()
    assert np.array_equal(emulated, want)
