"""Shared fixtures: a small exported ResNet-20 hard MoE (int8 QDQ) and test images."""

import logging

import numpy as np
import onnx
import pytest

from axmoe_testing import DATA, calibration, small_model

logging.getLogger().setLevel(logging.ERROR)


@pytest.fixture(scope="session")
def int8_resnet(tmp_path_factory) -> onnx.ModelProto:
    from export.exporter import export_model

    model = small_model("resnet20", "hard")
    out = tmp_path_factory.mktemp("resnet") / "resnet20-hard.onnx"
    export_model(model, model.axmoe_config, DATA, out, calibration_batches=calibration())
    return onnx.load(str(out))


@pytest.fixture(scope="session")
def images() -> np.ndarray:
    return np.random.default_rng(7).standard_normal((12, 3, 32, 32)).astype(np.float32)
