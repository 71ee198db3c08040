"""Shared fixtures: small exported models (dense and hard MoE ResNet-20), rewritten by the
pass, and a few real Fashion-MNIST test images."""

import logging

import numpy as np
import onnx
import pytest

from axmoe_testing import DATA, calibration, require_tool, small_model

logging.getLogger().setLevel(logging.ERROR)


@pytest.fixture(scope="session")
def fashion():
    from models.data import DatasetNotFoundError
    from models.datasets import load_dataset

    try:
        return load_dataset("fashion-mnist", "test", image_size=32, limit=96)
    except DatasetNotFoundError:
        require_tool(False, "Fashion-MNIST", "make data")


def _export(tmp_path_factory, topology: str):
    from export.exporter import export_model

    model = small_model("resnet20", topology)
    out = tmp_path_factory.mktemp(f"eval-{topology}") / f"resnet20-{topology}.onnx"
    export_model(model, model.axmoe_config, DATA, out, calibration_batches=calibration())
    return model, out


@pytest.fixture(scope="session")
def hard_model(tmp_path_factory):
    """(torch model, int8 ONNX path) of a small hard-MoE ResNet-20."""
    return _export(tmp_path_factory, "hard")


@pytest.fixture(scope="session")
def dense_model(tmp_path_factory):
    return _export(tmp_path_factory, "dense")


@pytest.fixture(scope="session")
def rewrite():
    """rewrite(int8_path, multiplier) -> path of the model rewritten by the pass (cached)."""
    from passes.approximate import approximate

    def make(path, multiplier: str):
        out = path.with_name(f"{path.stem}.{multiplier}.onnx")
        if not out.exists():
            model, _ = approximate(onnx.load(str(path)), {"multiplier": multiplier})
            onnx.save(model, str(out))
        return out
    return make


@pytest.fixture(scope="session")
def torch_macs():
    return torch_macs_per_image


def torch_macs_per_image(model, size: int = 32) -> dict[str, int]:
    """MACs per image of every Conv2d / Linear, counted with forward hooks on one image:
    out.numel() x in_channels / groups x kh x kw (conv), in x out (linear)."""
    import torch

    counts: dict[str, int] = {}

    def hook(name):
        def record(module, inputs, output):
            if isinstance(module, torch.nn.Conv2d):
                k = module.in_channels // module.groups * module.kernel_size[0] * module.kernel_size[1]
            else:
                k = module.in_features
            counts[name] = counts.get(name, 0) + int(output.numel()) * k
        return record

    handles = [m.register_forward_hook(hook(n)) for n, m in model.named_modules()
               if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    with torch.no_grad():
        model.eval()(torch.from_numpy(np.random.default_rng(0).standard_normal((1, 3, size, size)).astype(np.float32)))
    for h in handles:
        h.remove()
    return counts
