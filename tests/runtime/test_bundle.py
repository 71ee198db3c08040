"""Deployment bundles on this machine (`python -m runtime.bundle ... --target host`): the
bundle holds what the issue lists and nothing else, its C++ runner and its run.py give the
Python path's outputs bit for bit (`runtime.ort.session` on the same model), and bad input
fails in one line: a custom op with no library for the target, a missing cross compiler,
a corrupted library (caught from the manifest's hashes before anything loads).
The aarch64 bundles run under qemu in test_aarch64_ort.py."""

import json
import shutil
import subprocess
import sys

import numpy as np
import onnx
import pytest

from axmoe_testing import DATA, calibration, require_tool, run_cli, small_model
from runtime import bundle
from runtime.bundle import toolchain
from runtime.ort import session

require_tool(shutil.which("g++") is not None, "g++", "apt-get install g++")
ONE_LINE = 1


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """{name: path}: a hard-MoE ResNet-20 with a partial-product multiplier as the axmoe custom
    op, and with a mask multiplier lowered to standard ops (decomposed)."""
    from export.exporter import export_model
    from passes.approximate import approximate

    folder = tmp_path_factory.mktemp("bundle-models")
    net = small_model("resnet20", "hard")
    export_model(net, net.axmoe_config, DATA, folder / "int8.onnx", calibration_batches=calibration())
    out = {}
    for name, plan in {"pp": {"multiplier": "pp:i+j<3", "lowering": "lut"},
                       "mask": {"multiplier": "mul8s_1L2L", "lowering": "decomposed"}}.items():
        model, _ = approximate(onnx.load(str(folder / "int8.onnx")), plan)
        onnx.save(model, str(folder / f"{name}.onnx"))
        out[name] = folder / f"{name}.onnx"
    return out


@pytest.fixture(scope="module")
def x(tmp_path_factory):
    path = tmp_path_factory.mktemp("bundle-input") / "x.npy"
    np.save(path, np.random.default_rng(5).standard_normal((4, 3, 32, 32)).astype(np.float32))
    return path


def python_path(model, x_path):
    sess = session(str(model), threads=1)
    return sess.run(None, {sess.get_inputs()[0].name: np.load(x_path)})[0]


def test_host_bundle_cpp_runner_and_run_py_equal_the_python_path(models, x, tmp_path):
    results = tmp_path / "r.json"
    results.write_text(json.dumps({"top1": 0.5, "top5": 0.9, "dataset": "fashion-mnist", "images": 100,
                                   "backend": "ort", "normalised_power": 0.8125, "latency": {}}))
    out = tmp_path / "b"
    run_cli("runtime.bundle", models["pp"], "--target", "host", "--out", out, "--results", results)
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["model.onnx", "libaxmoe_ort.so", "axmoe_run", "libonnxruntime.so.1", "run.py", "manifest.json", "README.md"])
    manifest = json.loads((out / "manifest.json").read_text())
    assert set(manifest["files"]) == {p.name for p in out.iterdir()} - {"manifest.json", "README.md"}
    assert manifest["normalised_power"] == 0.8125 and manifest["accuracy"]["top1"] == 0.5
    assert manifest["plan"] == {"lowering": "lut", "multiplier": "pp:i+j<3"}
    assert {n["multiplier"] for n in manifest["nodes"].values()} == {"pp:00,01,02,10,11,20"}
    import multipliers
    assert manifest["multipliers"]["pp:00,01,02,10,11,20"]["lut_sha256"] == multipliers.get("pp:i+j<3").sha256

    want = python_path(models["pp"], x)
    for path in ("auto", "lut", "decomposed"):
        proc = subprocess.run([out / "axmoe_run", out, "--input", x, "--output", tmp_path / f"y-{path}.npy",
                               "--runs", "3", "--path", path], capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
        assert "latency ms over 3 runs" in proc.stdout and "p50" in proc.stdout and "kernels: " in proc.stdout
        assert np.array_equal(np.load(tmp_path / f"y-{path}.npy"), want)
    proc = subprocess.run([sys.executable, out / "run.py", "--input", x, "--output", tmp_path / "y-py.npy"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert np.array_equal(np.load(tmp_path / "y-py.npy"), want)


def test_decomposed_bundle_has_no_library_and_matches(models, x, tmp_path):
    out = tmp_path / "b"
    manifest = bundle.build(models["mask"], "host", out)
    assert manifest["library"] is None and not (out / "libaxmoe_ort.so").exists()
    proc = subprocess.run([out / "axmoe_run", out, "--input", x, "--output", tmp_path / "y.npy"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "standard onnxruntime ops only" in proc.stdout
    assert np.array_equal(np.load(tmp_path / "y.npy"), python_path(models["mask"], x))


def test_corrupted_library_is_caught_from_the_manifest(models, x, tmp_path):
    out = tmp_path / "b"
    bundle.build(models["pp"], "host", out)
    data = bytearray((out / "libaxmoe_ort.so").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (out / "libaxmoe_ort.so").write_bytes(bytes(data))
    for command in ([out / "axmoe_run", out, "--input", x], [sys.executable, out / "run.py", "--input", x]):
        proc = subprocess.run(command, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 1
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == ONE_LINE and "libaxmoe_ort.so: sha256" in lines[0] and "manifest" in lines[0], lines
    with pytest.raises(bundle.BundleError, match="libaxmoe_ort.so: sha256 does not match"):
        bundle.verify(out)
    proc = run_cli("runtime.bundle", "--verify", out, ok=False)
    assert proc.returncode == 1 and len(proc.stderr.strip().splitlines()) == ONE_LINE


def test_custom_op_without_a_library_fails_in_one_line(models, tmp_path):
    model = onnx.load(str(models["pp"]))
    model.graph.node[0].domain = "com.example"
    model.opset_import.append(onnx.helper.make_opsetid("com.example", 1))
    onnx.save(model, str(tmp_path / "foreign.onnx"))
    proc = run_cli("runtime.bundle", tmp_path / "foreign.onnx", "--target", "aarch64", "--out", tmp_path / "b",
                   ok=False)
    assert proc.returncode == 1 and proc.stderr.count("\n") == ONE_LINE
    assert "no library for aarch64 (com.example: " in proc.stderr
    assert not (tmp_path / "b").exists()


def test_missing_cross_compiler_names_what_is_missing(models, tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no aarch64-linux-gnu-g++ on it
    with pytest.raises(bundle.BundleError) as error:
        bundle.build(models["pp"], "aarch64", tmp_path / "b")
    message = str(error.value)
    assert "\n" not in message and "need libaxmoe_ort.so" in message and toolchain.CROSS_CXX in message
    assert not (tmp_path / "b").exists()
