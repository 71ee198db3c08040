"""`python -m passes.approximate` through the real entry point: rewrites, explained refusals,
and every bad input a one-line error (never a traceback) or a correct rewrite."""

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from axmoe_testing import run_cli, run_oracle
from passes import approximate as approximate_module
from passes import model_io
from passes.approximate import (LOWERING_REFUSALS, NO_LOWERING_CAN, ApproximationPass, NodeReport, Report, approximate,
                                explain_skips)
from passes.reasons import Reason
from runtime.ort import session


def cli(*args, ok=True):
    return run_cli("passes.approximate", *args, ok=ok)


def one_line_error(proc, fragment):
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert fragment in proc.stderr, proc.stderr


@pytest.fixture(scope="module")
def int8_path(int8_resnet, tmp_path_factory):
    path = tmp_path_factory.mktemp("cli") / "in.onnx"
    onnx.save(int8_resnet, str(path))
    return path


def float_cnn(dtype=np.float32, opset=17) -> onnx.ModelProto:
    """Conv -> Relu -> Flatten -> MatMul with a symbolic batch dimension, as a user brings it."""
    rng = np.random.default_rng(0)
    elem = helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
    nodes = [helper.make_node("Conv", ["input", "w"], ["c"], pads=[1, 1, 1, 1], name="conv"),
             helper.make_node("Relu", ["c"], ["r"]), helper.make_node("Flatten", ["r"], ["f"]),
             helper.make_node("MatMul", ["f", "fc"], ["output"], name="fc")]
    graph = helper.make_graph(nodes, "cnn", [helper.make_tensor_value_info("input", elem, ["N", 3, 6, 6])],
                              [helper.make_tensor_value_info("output", elem, ["N", 10])],
                              [numpy_helper.from_array((rng.standard_normal((8, 3, 3, 3)) * 0.3).astype(dtype), "w"),
                               numpy_helper.from_array((rng.standard_normal((288, 10)) * 0.1).astype(dtype), "fc")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=9)


def images(n, seed=0):
    return np.random.default_rng(seed).standard_normal((n, 3, 6, 6)).astype(np.float32)


@pytest.fixture(scope="module", params=["QUInt8", "QInt8"])
def quantized(request, tmp_path_factory):
    """`float_cnn` quantized by onnxruntime's quantizer (QDQ, per-channel symmetric int8
    weights), with uint8 (zp 128) or int8 (zp 0) activations."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.batches = iter([{"input": images(1, seed)} for seed in range(4)])

        def get_next(self):
            return next(self.batches, None)

    folder = tmp_path_factory.mktemp(request.param)
    onnx.save(float_cnn(), str(folder / "float.onnx"))
    quantize_static(str(folder / "float.onnx"), str(folder / "q.onnx"), Reader(), quant_format=QuantFormat.QDQ,
                    activation_type=getattr(QuantType, request.param), weight_type=QuantType.QInt8,
                    per_channel=True, extra_options={"ActivationSymmetric": True, "WeightSymmetric": True})
    return folder / "q.onnx"


def ort(model, x):
    data = model if not isinstance(model, onnx.ModelProto) else model.SerializeToString()
    return session(data, threads=1).run(None, {"input": x})[0]


def test_help():
    out = cli("--help").stdout
    for flag in ("--multiplier", "--plan", "--lowering", "--strict", "--report"):
        assert flag in out


def test_rewrite_with_report(int8_path, tmp_path):
    out, report = tmp_path / "out.onnx", tmp_path / "r.json"
    proc = cli(int8_path, out, "--multiplier", "mul8s_1KVA", "--report", report)
    assert "43 rewritten" in proc.stdout and "1 skipped" in proc.stdout
    assert "1 op(s) are not int8 products (not quantized: the activation input is float)" in proc.stdout
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
    one_line_error(proc, "--strict: 1 op(s) skipped")
    assert not (tmp_path / "o.onnx").exists()


# ------------------------------------------------------------------------ explained refusals
def test_refusal_of_one_lowering_is_explained(quantized, tmp_path):
    """An int8 model the requested lowering cannot carry is not "not a quantized model": each
    op is listed with its reason, the error names the lowering that can, and following that
    advice rewrites the model (equal to the numpy oracle)."""
    report, out = tmp_path / "r.json", tmp_path / "o.onnx"
    proc = cli(quantized, out, "--multiplier", "mitchell", "--lowering", "decomposed", "--report", report, ok=False)
    one_line_error(proc, "none of its 2 int8 Conv/Gemm/MatMul can be rewritten: --lowering decomposed: 2 op(s) "
                         "cannot take it (mitchell has no exact decomposition): use --lowering lut or auto")
    assert "not a quantized model" not in proc.stderr and not out.exists()
    for node in ("conv", "fc"):
        assert f"  skipped {node}: mitchell has no exact decomposition (" in proc.stdout
    nodes = json.loads(report.read_text())["nodes"]
    assert [(n["node"], n["status"], n["reason_code"]) for n in nodes] == [
        ("conv", "skipped", "no_exact_decomposition"), ("fc", "skipped", "no_exact_decomposition")]
    assert all(n["reason"].startswith("mitchell has no exact decomposition") for n in nodes)

    proc = cli(quantized, out, "--multiplier", "mitchell", "--lowering", "lut")
    assert "2 rewritten (lut 2), 0 kept exact, 0 skipped" in proc.stdout
    x = images(5)
    oracle = run_oracle(onnx.load(str(quantized)), onnx.load(str(out)), x)
    np.testing.assert_array_equal(ort(out.read_bytes(), x), oracle)


def test_partial_refusal_is_written_and_explained(quantized, tmp_path):
    plan = tmp_path / "p.yaml"
    plan.write_text("multiplier: mul8s_1KVA\nlowering: lut\n"
                    "overrides:\n  - match: {op_type: MatMul}\n    multiplier: mitchell\n    lowering: decomposed\n")
    proc = cli(quantized, tmp_path / "o.onnx", "--plan", plan)
    assert "1 rewritten (lut 1), 0 kept exact, 1 skipped" in proc.stdout
    assert "  skipped fc: mitchell has no exact decomposition (" in proc.stdout
    assert ("  the decomposed lowering: 1 op(s) cannot take it (mitchell has no exact decomposition): "
            "use --lowering lut or auto") in proc.stdout
    proc = cli(quantized, tmp_path / "s.onnx", "--plan", plan, "--strict", ok=False)
    one_line_error(proc, "--strict: 1 op(s) skipped, e.g. fc: mitchell has no exact decomposition")
    assert "the decomposed lowering: 1 op(s) cannot take it" in proc.stdout and not (tmp_path / "s.onnx").exists()


def test_resnet_refused_by_decomposed_is_not_called_unquantized(int8_path, tmp_path):
    proc = cli(int8_path, tmp_path / "o.onnx", "--multiplier", "mitchell", "--lowering", "decomposed", ok=False)
    one_line_error(proc, "none of its 43 int8 Conv/Gemm/MatMul can be rewritten: --lowering decomposed: 43 op(s) "
                         "cannot take it (mitchell has no exact decomposition): use --lowering lut or auto")
    assert "not a quantized model" not in proc.stderr
    assert proc.stdout.count("  skipped ") == 20 and "... 24 more skipped (--report" in proc.stdout
    assert "  1 op(s) are not int8 products (not quantized: the activation input is float)" in proc.stdout


def _skip(code: Reason, reason: str) -> NodeReport:
    return NodeReport("n", "Conv", "skipped", reason=reason, reason_code=code.code)


def test_explain_skips_groups_reasons_with_their_remedy():
    report = Report([
        _skip(Reason.NO_EXACT_DECOMPOSITION, "mitchell has no exact decomposition (a); use the lut lowering"),
        _skip(Reason.NO_EXACT_DECOMPOSITION, "mitchell has no exact decomposition (b); use the lut lowering"),
        _skip(Reason.INT8_MASK_NEEDS_BITWISE, "masking int8 activations needs BitwiseAnd (opset 18)"),
        _skip(Reason.FLOAT_ACTIVATION, "not quantized: the activation input is float"),
        _skip(Reason.INT32_OVERFLOW, "int32 overflow risk: max|LUT| 16384 x K 200000 >= 2^31"),
        _skip(Reason.ASYMMETRIC_ACTIVATION, "asymmetric activation: uint8 zero point [3] (needs 128)"),
        NodeReport("r", "Conv", "rewritten", lowering="lut"),
    ])
    assert explain_skips(report, "decomposed") == [
        "--lowering decomposed: 2 op(s) cannot take it (mitchell has no exact decomposition): use --lowering lut "
        "or auto",
        "--lowering decomposed: 1 op(s) cannot take it (masking int8 activations needs BitwiseAnd): use --lowering "
        "lut, or convert the model to opset 18",
        "1 op(s) are not int8 products (not quantized: the activation input is float): left as they are",
        "1 op(s) cannot take this multiplier in any lowering (int32 overflow risk: max|LUT| 16384 x K 200000 >= "
        "2^31): keep them exact (keep_exact in a plan) or choose a multiplier with smaller products",
        "1 op(s) no lowering rewrites (asymmetric activation: uint8 zero point [3] (needs 128)): "
        "left as they are",
    ]
    assert explain_skips(report, None)[0].startswith("the decomposed lowering: 2 op(s) cannot take it")
    assert explain_skips(Report([NodeReport("r", "Conv", "exact")])) == []


def test_every_pass_reason_is_classified():
    """Each reason the pass itself gives is either a refusal of one lowering (with the
    lowering that can) or one no lowering avoids: a new reason must say which."""
    assert set(ApproximationPass.reasons) == set(LOWERING_REFUSALS) | set(NO_LOWERING_CAN)
    assert not set(LOWERING_REFUSALS) & set(NO_LOWERING_CAN)


# ------------------------------------------------------------------------------- bad inputs
def _junk(path):
    path.write_bytes(b"\x00\x01not onnx")


def _truncated(path, int8_path):
    data = int8_path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _empty(path):
    path.write_bytes(b"")


def _old_opset(path):
    onnx.save(float_cnn(opset=11), str(path))


def _fp32(path):
    node = helper.make_node("MatMul", ["x", "w"], ["y"])
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, None)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              [numpy_helper.from_array(np.ones((3, 3), np.float32), "w")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=10), str(path))


def _float16(path):
    onnx.save(float_cnn(np.float16), str(path))


def _missing_data(path):
    onnx.save_model(float_cnn(), str(path), save_as_external_data=True, location="in.onnx.data", size_threshold=0)
    path.with_name("in.onnx.data").unlink()


@pytest.mark.parametrize("make_input, multiplier, fragments", [
    (None, "mul8s_1L2L", ["no such file"]),
    (_junk, "mul8s_1L2L", ["not an ONNX model (truncated or corrupt file"]),
    (_truncated, "mul8s_1L2L", ["not an ONNX model (truncated or corrupt file"]),
    (_empty, "mul8s_1L2L", ["not an ONNX model (no graph"]),
    ("int8", "mul8s_nope", ["unknown multiplier"]),
    (_fp32, "mul8s_1L2L", ["not a quantized model: no int8 Conv/Gemm/MatMul, 1 op(s) in float32"]),
    (_float16, "mul8s_1L2L", ["not a quantized model: no int8 Conv/Gemm/MatMul, 2 op(s) in float16 (conv: not "
                              "quantized: the activation input is float)", "quantize_static"]),
    (_old_opset, "mul8s_1L2L", ["opset 11 is below the minimum, 13"]),
    (_missing_data, "mul8s_1L2L", ["tensor 'w': external data file 'in.onnx.data' not found in the model's folder"]),
], ids=lambda v: getattr(v, "__name__", None) if callable(v) else None)
def test_user_errors_are_one_line(int8_path, tmp_path, make_input, multiplier, fragments):
    src = tmp_path / "in.onnx"
    if make_input == "int8":
        src = int8_path
    elif make_input is _truncated:
        _truncated(src, int8_path)
    elif make_input is not None:
        make_input(src)
    proc = cli(src, tmp_path / "o.onnx", "--multiplier", multiplier, ok=False)
    for fragment in fragments:
        one_line_error(proc, fragment)
    assert not (tmp_path / "o.onnx").exists()


def test_output_folder_is_created_and_a_folder_is_not_a_file(quantized, tmp_path):
    out = tmp_path / "new" / "deeper" / "o.onnx"
    cli(quantized, out, "--multiplier", "mul8s_1KVA", "--report", tmp_path / "reports" / "r.json")
    assert out.is_file() and (tmp_path / "reports" / "r.json").is_file()
    one_line_error(cli(quantized, tmp_path, "--multiplier", "mul8s_1KVA", ok=False), "is a folder, not a file name")


def test_dynamic_batch(quantized, tmp_path):
    """A model with a symbolic batch dimension is rewritten, keeps the symbol, and runs at
    batch 1 and 5, equal to the numpy oracle; each image's result does not depend on the batch."""
    out = tmp_path / "o.onnx"
    cli(quantized, out, "--multiplier", "mul8s_1KVA", "--lowering", "lut")
    rewritten, source = onnx.load(str(out)), onnx.load(str(quantized))
    assert rewritten.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "N"
    x = images(5, seed=9)
    five = ort(rewritten, x)
    assert five.shape == (5, 10)
    np.testing.assert_array_equal(five, run_oracle(source, rewritten, x))
    for i in range(5):
        np.testing.assert_array_equal(ort(rewritten, x[i:i + 1]), five[i:i + 1])
    assert not np.array_equal(five, ort(source, x))  # something was approximated


def test_external_data_input(quantized, tmp_path):
    """A model stored with external data is read relative to its own folder (the CLI runs from
    the repository root) and rewritten exactly as the same model stored in one file."""
    folder = tmp_path / "model"
    folder.mkdir()
    onnx.save_model(onnx.load(str(quantized)), str(folder / "in.onnx"), save_as_external_data=True,
                    location="weights.bin", size_threshold=0)
    assert (folder / "weights.bin").stat().st_size > 0
    cli(folder / "in.onnx", tmp_path / "ext.onnx", "--multiplier", "mul8s_1L2J", "--lowering", "lut")
    cli(quantized, tmp_path / "one.onnx", "--multiplier", "mul8s_1L2J", "--lowering", "lut")
    assert not (tmp_path / "ext.onnx.data").exists()  # a small output is one file
    x = images(5, seed=3)
    np.testing.assert_array_equal(ort((tmp_path / "ext.onnx").read_bytes(), x),
                                  ort((tmp_path / "one.onnx").read_bytes(), x))


def test_large_output_is_written_with_external_data(quantized, tmp_path, monkeypatch, capsys):
    """An output over model_io.MAX_PROTO_BYTES (lowered here instead of building 2 GB) is
    written as OUT + OUT.data; onnxruntime loads the pair from the path and it computes what
    the rewritten model computes in memory."""
    monkeypatch.setattr(model_io, "MAX_PROTO_BYTES", 2048)
    out = tmp_path / "big.onnx"
    assert approximate_module.main([str(quantized), str(out), "--multiplier", "mul8s_1KVA", "--lowering", "lut"]) == 0
    assert "2 rewritten" in capsys.readouterr().out
    assert (tmp_path / "big.onnx.data").stat().st_size > out.stat().st_size
    expected, _ = approximate(onnx.load(str(quantized)), {"multiplier": "mul8s_1KVA", "lowering": "lut"})
    x = images(5, seed=4)
    np.testing.assert_array_equal(ort(out, x), ort(expected, x))
    np.testing.assert_array_equal(ort(model_io.load(out), x), ort(expected, x))
