"""Shared fixtures of the TVM backend tests: small exported models (int8 QDQ, rewritten per
multiplier and lowering) and their compiled sessions, built once per test session.

Compiles are the slow part (10-60 s each on 2 cores), so every model is compiled once, with
a symbolic batch, through `runtime.tvm.session`'s cache (.cache/tvm, or $AXMOE_TVM_CACHE): a
rerun with unchanged sources and models loads the libraries instead of compiling them.
"""

import importlib.util
import logging

import numpy as np
import onnx
import pytest

from axmoe_testing import DATA, calibration, require_tool, small_model

require_tool(importlib.util.find_spec("tvm") is not None, "apache-tvm", "pip install -e '.[tvm]'")

logging.getLogger().setLevel(logging.ERROR)

# ViT-Small at a small size: 32x32 images, patch 8 (17 tokens), width 32, 2 blocks, the
# second a hard MoE (axmoe_testing.SMALL / MOE_SMALL)
ARCHS = {"resnet20": "ResNet-20", "vit_small": "ViT-Small"}


@pytest.fixture(scope="session")
def int8_model(tmp_path_factory):
    """(arch, topology) -> (int8 QDQ onnx.ModelProto), exported once."""
    from export.exporter import export_model

    cache = {}

    def get(arch: str, topology: str) -> onnx.ModelProto:
        if (arch, topology) not in cache:
            model = small_model(arch, topology)
            out = tmp_path_factory.mktemp("tvm-models") / f"{arch}-{topology}.onnx"
            export_model(model, model.axmoe_config, DATA, out, calibration_batches=calibration())
            cache[arch, topology] = onnx.load(str(out))
        return cache[arch, topology]

    return get


@pytest.fixture(scope="session")
def rewritten(int8_model, tmp_path_factory):
    """(arch, topology, multiplier, lowering) -> path of the rewritten model."""
    from passes.approximate import approximate

    folder = tmp_path_factory.mktemp("tvm-rewritten")
    cache = {}

    def get(arch, topology, multiplier, lowering):
        key = (arch, topology, multiplier, lowering)
        if key not in cache:
            model, _ = approximate(int8_model(arch, topology), {"multiplier": multiplier, "lowering": lowering})
            path = folder / ("-".join(key) + ".onnx")
            onnx.save(model, str(path))
            cache[key] = path
        return cache[key]

    return get


@pytest.fixture(scope="session")
def images() -> np.ndarray:
    return np.random.default_rng(11).standard_normal((24, 3, 32, 32)).astype(np.float32)
