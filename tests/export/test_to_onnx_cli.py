"""`python -m export.to_onnx` through the real entry point, on real Fashion-MNIST data."""

import json

import onnx
import pytest
import torch

import models
from modelfile import metadata
from models.datasets import load_dataset

from axmoe_testing import run_cli


def cli(*args, ok=True):
    return run_cli("export.to_onnx", *args, ok=ok)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    model = models.create("resnet20", "hard", num_classes=10, width=4)
    data = load_dataset("fashion-mnist", "test", limit=1).config()
    path = tmp_path_factory.mktemp("ckpt") / "checkpoint.pt"
    torch.save({"config": model.axmoe_config, "state_dict": model.state_dict(), "data": data}, path)
    return path


def test_help_explains_options():
    out = cli("--help").stdout
    for flag in ("--checkpoint", "--out", "--dataset", "--calibration", "--calib-samples", "--fp32-only", "--opset"):
        assert flag in out


def test_int8_export_with_verification(checkpoint, tmp_path):
    out = tmp_path / "m.onnx"
    proc = cli("--checkpoint", checkpoint.parent, "--out", out, "--calib-samples", 64,
               "--calibration", "percentile", "--verify", 200, "--json", tmp_path / "r.json")
    assert "int8" in proc.stdout and out.is_file() and (tmp_path / "m.fp32.onnx").is_file()
    model = onnx.load(str(out))
    for key, value in [(metadata.ARCH, "resnet20"), (metadata.TOPOLOGY, "hard"), (metadata.EXPERTS, 4),
                       (metadata.DATASET, "fashion-mnist"), (metadata.CALIBRATION, "percentile")]:
        assert metadata.get(model, key) == value, key.name
    assert metadata.get(model, metadata.VERSION)
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["verify"]["images"] == 200
    assert report["verify"]["emulation_same_class"] == 1.0  # invariant 4: same class on every image


def test_fp32_only(checkpoint, tmp_path):
    out = tmp_path / "f.onnx"
    cli("--checkpoint", checkpoint, "--out", out, "--fp32-only", "--opset", 18)
    model = onnx.load(str(out))
    assert not any(n.op_type == "QuantizeLinear" for n in model.graph.node)
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"


@pytest.mark.parametrize("args, fragment", [
    (("--checkpoint", "/nonexistent", "--out", "x.onnx"), "no such checkpoint"),
    (("--checkpoint", "CKPT", "--out", "x.onnx", "--arch", "vgg11_bn"), "does not match"),
    (("--checkpoint", "CKPT", "--out", "x.onnx", "--dataset", "mnist-nope"), "unknown dataset"),
    (("--checkpoint", "CKPT", "--out", "x.txt"), ".onnx"),
    (("--checkpoint", "NOTCKPT", "--out", "x.onnx"), "not a readable"),
])
def test_user_errors_are_one_line(checkpoint, tmp_path, args, fragment):
    bogus = tmp_path / "bogus.pt"
    bogus.write_bytes(b"not a checkpoint")
    args = [str(checkpoint) if a == "CKPT" else str(bogus) if a == "NOTCKPT" else
            str(tmp_path / a) if a.endswith((".onnx", ".txt")) else a for a in args]
    proc = cli(*args, ok=False)
    assert proc.returncode != 0
    assert fragment in proc.stderr and "Traceback" not in proc.stderr
