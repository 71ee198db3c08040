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
from passes.compensate import compensate, linear_terms


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


def test_linear_compensated_model_equals_onnxruntime_and_the_emulation(int8_model, images, tmp_path):
    """`linear` (the control-variate term): the custom op's `linear` input in TVM's converter,
    and the decomposed lowering's standard ops (ones-kernel ConvInteger, Mod, Div) in TVM's own
    frontend, give onnxruntime's integers; the emulation with `passes.compensate.linear_terms`
    too."""
    int8 = int8_model("resnet20", "hard")
    calib = np.random.default_rng(5).standard_normal((32, 3, 32, 32)).astype(np.float32)
    stats = calibration.collect(int8, calib, pixels=calibration.LINEAR_PIXELS)
    want = None
    for lowering in ("lut", "decomposed"):
        plan = {"multiplier": "mul8s_1L2L", "lowering": lowering, "compensate": "linear"}
        model, report = approximate(int8, plan, stats)
        terms = linear_terms(model)
        assert len(terms) > 10 and all(n.get("linear") for n in report.compensation["nodes"] if n["node"] in terms)
        path = tmp_path / f"linear-{lowering}.onnx"
        onnx.save(model, str(path))
        ort_out = run_ort(model, images)
        want = ort_out if want is None else want
        assert np.array_equal(ort_out, want)  # lut == decomposed in onnxruntime
        got = runtime.tvm.session(str(path), threads=2).run(images)
        assert got.dtype == want.dtype and np.array_equal(got, want), \
            f"{lowering}: {np.sum((got != want).any(axis=1))} of {len(images)} images differ"
    tables = {name: multipliers.get(e["multiplier"]) for name, e in metadata.get(model, metadata.ASSIGNMENT).items()}
    tuned, _ = compensate(int8, tables, stats, "linear")
    with torch.no_grad():
        emulated = QDQEmulation(tuned, multipliers=tables, linear_terms=linear_terms(tuned))(
            torch.from_numpy(images)).numpy()
    assert np.array_equal(emulated, want)
