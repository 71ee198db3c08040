"""`python -m passes.approximate` through the real entry point."""

import json

import onnx
import pytest

from axmoe_testing import run_cli



def cli(*args, ok=True):
    return run_cli("passes.approximate", *args, ok=ok)


@pytest.fixture(scope="module")
def int8_path(int8_resnet, tmp_path_factory):
    path = tmp_path_factory.mktemp("cli") / "in.onnx"
    onnx.save(int8_resnet, str(path))
    return path


def test_help():
    out = cli("--help").stdout
    for flag in ("--multiplier", "--plan", "--lowering", "--strict", "--report"):
        assert flag in out


def test_rewrite_with_report(int8_path, tmp_path):
    out, report = tmp_path / "out.onnx", tmp_path / "r.json"
    proc = cli(int8_path, out, "--multiplier", "mul8s_1KVA", "--report", report)
    assert "43 rewritten" in proc.stdout and "1 skipped" in proc.stdout
    data = json.loads(report.read_text())
    assert data["summary"]["rewritten"] == 43 and data["summary"]["lowerings"] == {"lut": 42, "decomposed": 1}
    assert onnx.load(str(out)).opset_import


def test_plan_and_lowering_flag(int8_path, tmp_path):
    plan = tmp_path / "p.yaml"
    plan.write_text("multiplier: mul8s_1L2J\nkeep_exact: [first_conv]\n")
    proc = cli(int8_path, tmp_path / "o.onnx", "--plan", plan, "--lowering", "lut")
    assert "42 rewritten (lut 42), 1 kept exact" in proc.stdout


def test_strict_fails_on_skips(int8_path, tmp_path):
    proc = cli(int8_path, tmp_path / "o.onnx", "--multiplier", "mul8s_1L2L", "--strict", ok=False)
    assert proc.returncode == 2 and "--strict" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "o.onnx").exists()


@pytest.mark.parametrize("make_input, args, fragment", [
    (None, ("--multiplier", "mul8s_1L2L"), "no such file"),
    ("junk", ("--multiplier", "mul8s_1L2L"), "not an ONNX model"),
    ("int8", ("--multiplier", "mul8s_nope"), "unknown multiplier"),
    ("fp32", ("--multiplier", "mul8s_1L2L"), "not a quantized model"),
])
def test_user_errors_are_one_line(int8_path, tmp_path, make_input, args, fragment):
    src = tmp_path / "in.onnx"
    if make_input == "junk":
        src.write_bytes(b"\x00\x01not onnx")
    elif make_input == "int8":
        src = int8_path
    elif make_input == "fp32":
        src = int8_path.parent.parent / "fp32.onnx"
        from onnx import TensorProto, helper, numpy_helper
        import numpy as np

        node = helper.make_node("MatMul", ["x", "w"], ["y"])
        graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, None)],
                                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                                  [numpy_helper.from_array(np.ones((3, 3), np.float32), "w")])
        onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=10), str(src))
    proc = cli(src, tmp_path / "o.onnx", *args, ok=False)
    assert proc.returncode == 2 and fragment in proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
