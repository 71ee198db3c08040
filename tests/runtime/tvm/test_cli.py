"""`python -m runtime.tvm compile|run` as a user calls it: a library that runs on its own
(LIB.so + LIB.so.json), the same output as the Python session, one-line errors (exit 2)."""

import json

import numpy as np
import pytest

from axmoe_testing import run_cli, run_ort


@pytest.fixture(scope="module")
def compiled(rewritten, tmp_path_factory):
    """(model path, library) of ResNet-20 dense under mul8s_1KVA (lut lowering), batch fixed at 4."""
    model = rewritten("resnet20", "dense", "mul8s_1KVA", "lut")
    library = tmp_path_factory.mktemp("cli") / "resnet20.so"
    proc = run_cli("runtime.tvm", "compile", model, "--target", "host", "--out", library, "--batch", 4, timeout=900)
    assert "wrote" in proc.stderr and "compile" in proc.stderr
    return model, library


def test_compile_then_run_equals_onnxruntime(compiled, images, tmp_path):
    import onnx

    model, library = compiled
    meta = json.loads(library.with_name(library.name + ".json").read_text())
    assert meta["input"] == {"name": "input", "shape": [4, 3, 32, 32], "dtype": "float32"}
    np.save(tmp_path / "x.npy", images[:4])
    run_cli("runtime.tvm", "run", library, "--input", tmp_path / "x.npy", "--output", tmp_path / "y.npy",
            "--threads", 1)
    assert np.array_equal(np.load(tmp_path / "y.npy"), run_ort(onnx.load(str(model)), images[:4]))
    proc = run_cli("runtime.tvm", "run", library, "--input", tmp_path / "x.npy")
    assert "argmax per row" in proc.stdout


def test_user_errors_are_one_line(compiled, tmp_path):
    model, library = compiled
    np.save(tmp_path / "x3.npy", np.zeros((3, 3, 32, 32), np.float32))
    (tmp_path / "bad.onnx").write_text("not a model")
    cases = [
        (("compile", tmp_path / "missing.onnx", "--out", tmp_path / "m.so"), "no such file"),
        (("compile", tmp_path / "bad.onnx", "--out", tmp_path / "m.so"), "not an ONNX model"),
        (("compile", model, "--target", "riscv", "--out", tmp_path / "m.so"), "target must be"),
        (("compile", model, "--target", '{"kind": "cuda"}', "--out", tmp_path / "m.so"), "only CPU targets"),
        (("run", library, "--input", tmp_path / "x3.npy"), "must have shape [4, 3, 32, 32]"),
        (("run", library, "--input", tmp_path / "missing.npy"), "no such file"),
        (("run", tmp_path / "bad.onnx", "--input", tmp_path / "x3.npy"), "no bad.onnx.json beside it"),
    ]
    for args, message in cases:
        proc = run_cli("runtime.tvm", *args, ok=False)
        err = proc.stderr.strip()
        assert proc.returncode == 2 and message in err and "\n" not in err and "Traceback" not in err, (args, err)


def test_unsupported_op_is_named(tmp_path):
    from onnx import TensorProto, helper

    node = helper.make_node("Mystery", ["x"], ["y"], domain="other")
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("other", 1)],
                              ir_version=10)
    (tmp_path / "m.onnx").write_bytes(model.SerializeToString())
    proc = run_cli("runtime.tvm", "compile", tmp_path / "m.onnx", "--out", tmp_path / "m.so", ok=False)
    assert proc.returncode == 2 and "other.Mystery" in proc.stderr and "Traceback" not in proc.stderr


def test_help():
    proc = run_cli("runtime.tvm", "compile", "--help")
    assert "--target" in proc.stdout and "aarch64" in proc.stdout and "--kernel" in proc.stdout
