"""Helpers shared by the test packages: small models, calibration data, runners."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

import models
import multipliers
from export.emulation import QDQEmulation
from modelfile import metadata
from runtime.ort import session

SMALL = {
    "resnet20": dict(width=4),
    "vgg11_bn": dict(width_mult=0.125),
    "vgg19_bn": dict(width_mult=0.0625),
    "vit_small": dict(embed_dim=32, depth=2, num_heads=2, patch_size=8),
}
MOE_SMALL = {"vit_small": dict(moe_blocks=[1])}
DATA = {"dataset": "synthetic", "image_size": 32, "mean": [0.5] * 3, "std": [0.25] * 3}
PAIRS = [(a, t) for a in models.list_archs() for t in models.list_topologies()]


def small_model(arch, topology, seed=0):
    torch.manual_seed(seed)
    options = {**SMALL[arch], **(MOE_SMALL.get(arch, {}) if topology != "dense" else {})}
    model = models.create(arch, topology, num_classes=10, **options).eval()
    # BatchNorm statistics away from the identity, so folding is exercised for real
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
    return model


def calibration(n=4, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal((16, 3, 32, 32)).astype(np.float32) for _ in range(n)]


def run_ort(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    return session(model.SerializeToString(), threads=1).run(None, {"input": x})[0]


def run_tvm(model: bytes, folder: Path, x: np.ndarray, kernel: str = "auto") -> np.ndarray:
    """Compile an ONNX model (one input) with TVM for this CPU, export it to `folder`, run it on x."""
    from runtime.tvm import build
    from runtime.tvm.runner import Session

    proto = onnx.load_model_from_string(model)
    executable = build.compile_model(proto, "host", kernel=kernel)
    library = build.export(executable, folder / "model.so", "host", build.signature(proto, None))
    return Session(library).run(x)


def assignment(model: onnx.ModelProto) -> dict:
    return metadata.get(model, metadata.ASSIGNMENT)


def run_oracle(int8: onnx.ModelProto, rewritten: onnx.ModelProto, x: np.ndarray, operand_order="xw") -> np.ndarray:
    """The int8 model executed with the numpy oracle's products, per the pass's assignment."""
    mults = {}
    for name, entry in assignment(rewritten).items():
        m = multipliers.get(entry["multiplier"])
        if operand_order == "wx":
            m = multipliers.Multiplier(m.name + "^T", np.ascontiguousarray(m.lut.T), m.kind)
        mults[name] = m
    with torch.no_grad():
        return QDQEmulation(int8, multipliers=mults, backend="oracle")(torch.from_numpy(x)).numpy()


ROOT = Path(__file__).resolve().parents[1]


def run_cli(module: str, *args, ok: bool = True, timeout: int = 300) -> subprocess.CompletedProcess:
    """`python -m module args...` from the repo root; asserts success unless `ok` is False."""
    proc = subprocess.run([sys.executable, "-m", module, *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)
    if ok:
        assert proc.returncode == 0, proc.stderr[-2000:]
    return proc


def require_tool(found: bool, what: str, fix: str) -> None:
    """Skip the calling test (or test module) when a tool it needs is missing; fail it instead
    when the environment variable CI is set. CI installs every tool and data set with the
    README's commands, so there a missing one is a broken set-up that a skip would hide.

    Args:
        found: whether the tool is there.
        what: what is missing, as the message names it ("cmake and a C++ compiler").
        fix: the command that installs it ("make ort-headers").
    """
    __tracebackhide__ = True  # skip and failure reports name the caller's line
    if found:
        return
    message = f"{what} not found ({fix})"
    if os.environ.get("CI"):
        pytest.fail(f"{message}; CI is set, so a missing tool is a failure, not a skip", pytrace=False)
    pytest.skip(message, allow_module_level=True)
