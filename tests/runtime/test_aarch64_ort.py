"""Real onnxruntime on aarch64: aarch64 bundles (`--target aarch64`: the cross-built op
library, PyPI's manylinux aarch64 onnxruntime, the cross-built C++ runner) run under
qemu-aarch64 and give the x86 onnxruntime outputs bit for bit, for a hard-MoE ResNet-20 with
a mask multiplier (decomposed: standard ops, no library), the same with a partial-product
multiplier (axmoe custom ops) and a ViT-Small whose second block is a hard MoE (custom ops).

Both kernel dispatch paths run: `-cpu cortex-a72` (Raspberry Pi 4, no dot product) and
`-cpu cortex-a76` (Pi 5, SDOT), and the runner's report shows which one the library chose.
The bundles' run.py (onnxruntime's Python API) runs all three models in one qemu python3.11.

Needs aarch64-linux-gnu-g++ / qemu-aarch64 (scripts/cross_toolchain.sh) and the sysroot with
the onnxruntime wheel (`make aarch64-sysroot`); skipped without them, a failure when CI is set."""

import json
import os
import shutil
import subprocess

import numpy as np
import onnx
import pytest

from axmoe_testing import DATA, calibration, require_tool, small_model
from runtime import bundle
from runtime.bundle import toolchain
from runtime.ort import session

QEMU = shutil.which("qemu-aarch64")
SYSROOT = toolchain.sysroot()
require_tool(bool(shutil.which(toolchain.CROSS_CXX) and QEMU), "aarch64-linux-gnu-g++ and qemu-aarch64",
             "scripts/cross_toolchain.sh")
require_tool("onnxruntime" in (SYSROOT / ".complete").read_text() if (SYSROOT / ".complete").exists() else False,
             f"the aarch64 sysroot with onnxruntime {SYSROOT}", "make aarch64-sysroot")

CASES = {  # name: (arch, multiplier, lowering)
    "r20-mask": ("resnet20", "mul8s_1L2L", "decomposed"),
    "r20-pp": ("resnet20", "pp:i+j<3", "lut"),
    "vit-pp": ("vit_small", "pp:i+j<3", "lut"),
}
DOT = {"cortex-a72": "neon dot product: none", "cortex-a76": "neon dot product: dotprod"}


@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    """{case: (bundle folder, x.npy, x86 onnxruntime output)}."""
    from export.exporter import export_model
    from passes.approximate import approximate

    folder = tmp_path_factory.mktemp("aarch64-ort")
    x = np.random.default_rng(7).standard_normal((2, 3, 32, 32)).astype(np.float32)
    np.save(folder / "x.npy", x)
    int8, out = {}, {}
    for name, (arch, multiplier, lowering) in CASES.items():
        if arch not in int8:
            net = small_model(arch, "hard")
            int8[arch] = folder / f"{arch}.onnx"
            export_model(net, net.axmoe_config, DATA, int8[arch], calibration_batches=calibration())
        model, _ = approximate(onnx.load(str(int8[arch])), {"multiplier": multiplier, "lowering": lowering})
        onnx.save(model, str(folder / f"{name}.onnx"))
        sess = session(str(folder / f"{name}.onnx"), threads=1)
        want = sess.run(None, {sess.get_inputs()[0].name: x})[0]
        bundle.build(folder / f"{name}.onnx", "aarch64", folder / name)
        out[name] = (folder / name, folder / "x.npy", want)
    return out


def qemu(cpu, *command, timeout=600, env=None):
    proc = subprocess.run([QEMU, "-L", str(SYSROOT), "-cpu", cpu, *map(str, command)], capture_output=True,
                          text=True, timeout=timeout, env=env)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    return proc.stdout


def test_bundles_are_aarch64(bundles):
    for name, (folder, _, _) in bundles.items():
        manifest = json.loads((folder / "manifest.json").read_text())
        assert manifest["target"] == "aarch64"
        assert (manifest["library"] is None) == (name == "r20-mask")
        for binary in ["axmoe_run", "libonnxruntime.so.1"] + (["libaxmoe_ort.so"] if manifest["library"] else []):
            header = (folder / binary).read_bytes()[:20]
            assert header[:4] == b"\x7fELF" and int.from_bytes(header[18:20], "little") == 183, binary  # EM_AARCH64


@pytest.mark.parametrize("cpu", ["cortex-a72", "cortex-a76"])
def test_cpp_runner_under_qemu_equals_x86(bundles, cpu, tmp_path):
    for name, (folder, x, want) in bundles.items():
        paths = ["auto", "lut"] if name == "r20-pp" else ["auto"]  # auto: decomposed (dot) path; lut: LUT kernel
        for path in paths:
            y = tmp_path / f"{name}-{path}.npy"
            stdout = qemu(cpu, folder / "axmoe_run", folder, "--input", x, "--output", y, "--runs", 1, "--warmup", 0,
                          "--path", path)
            if name == "r20-mask":
                assert "standard onnxruntime ops only" in stdout
            else:
                assert "kernels: neon [" in stdout and DOT[cpu] in stdout, stdout
            assert np.array_equal(np.load(y), want), (name, cpu, path)


def test_python_onnxruntime_under_qemu_equals_x86(bundles, tmp_path):
    """One qemu python3.11 (importing onnxruntime there takes tens of seconds) runs every bundle
    through its own run.py."""
    script = "\n".join([
        "import sys, importlib.util, numpy as np",
        f"spec = importlib.util.spec_from_file_location('run', {str(bundles['r20-pp'][0] / 'run.py')!r})",
        "run = importlib.util.module_from_spec(spec); spec.loader.exec_module(run)",
        *[f"np.save({str(tmp_path / (name + '.npy'))!r}, run.run({str(folder)!r}, [np.load({str(x)!r})])[0])"
          for name, (folder, x, _) in bundles.items()],
    ])
    env = {**os.environ, "PYTHONPATH": str(SYSROOT / "site")}
    env.pop("PYTHONHOME", None)
    qemu("cortex-a76", SYSROOT / "usr/bin/python3.11", "-c", script, timeout=900, env=env)
    for name, (_, _, want) in bundles.items():
        assert np.array_equal(np.load(tmp_path / f"{name}.npy"), want), name


def test_corrupted_library_is_caught_under_qemu(bundles, tmp_path):
    folder = tmp_path / "b"
    shutil.copytree(bundles["r20-pp"][0], folder)
    shutil.copyfile(toolchain.build_op_library("host"), folder / "libaxmoe_ort.so")  # the x86 build, not aarch64
    proc = subprocess.run([QEMU, "-L", str(SYSROOT), "-cpu", "cortex-a72", folder / "axmoe_run", folder,
                           "--input", bundles["r20-pp"][1]], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1
    assert "libaxmoe_ort.so: sha256" in proc.stderr


