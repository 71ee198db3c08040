"""runtime.tvm.contrib_ops: the onnxruntime contrib ops that its graph optimizer fuses into
axmoe models, compiled by TVM, against onnxruntime's own kernels on one-node models.

QLinearSoftmax and QGemm are integer in, integer out: equal on every input (hypothesis draws
the types, sizes, scales, zero points, axis / transposes, alpha, bias and output type). The
float ones (BiasGelu, SkipLayerNormalization, FusedMatMul) follow onnxruntime's operation order
but keep TVM's erf / sums: equal to a few float32 ulps."""

import numpy as np
import onnxruntime as ort
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

from axmoe_testing import run_tvm
from runtime.tvm import contrib_ops
from runtime.tvm.converters import ConversionError

MS = "com.microsoft"


def one_node(node, x: np.ndarray, inits: list, out_type=None) -> bytes:
    elem = helper.np_dtype_to_tensor_dtype(x.dtype)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", elem, ["n", *x.shape[1:]])],
                              [helper.make_tensor_value_info(node.output[0], out_type or elem, None)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(MS, 1)],
                              ir_version=8)
    return model.SerializeToString()


def run_onnxruntime(model: bytes, x: np.ndarray) -> np.ndarray:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # the node as it is
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]


def qlinear_softmax(x: np.ndarray, x_scale, y_scale, y_zp, axis: int) -> bytes:
    dtype = x.dtype.type
    inits = [numpy_helper.from_array(np.array(x_scale, np.float32), "xs"),
             numpy_helper.from_array(np.array(0, dtype), "xz"),
             numpy_helper.from_array(np.array(y_scale, np.float32), "ys"),
             numpy_helper.from_array(np.array(y_zp, dtype), "yz")]
    node = helper.make_node("QLinearSoftmax", ["x", "xs", "xz", "ys", "yz"], ["y"], domain=MS, opset=13, axis=axis)
    return one_node(node, x, inits)


@st.composite
def softmax_cases(draw):
    signed = draw(st.booleans())
    return dict(signed=signed, rows=draw(st.integers(1, 40)), width=draw(st.integers(2, 80)),
                extra=draw(st.sampled_from([None, 3])), axis_last=draw(st.booleans()),
                x_scale=draw(st.floats(0.002, 0.5)), y_scale=draw(st.sampled_from([1 / 256, 1 / 255, 0.0042])),
                y_zp=-128 if signed else draw(st.sampled_from([0, 3])), seed=draw(st.integers(0, 2**31 - 1)))


@settings(max_examples=6, deadline=None)
@given(case=softmax_cases())
def test_qlinear_softmax_equals_onnxruntime(case, tmp_path_factory):
    rng = np.random.default_rng(case["seed"])
    dtype = np.int8 if case["signed"] else np.uint8
    info = np.iinfo(dtype)
    shape = (case["rows"], case["width"]) if case["extra"] is None else (case["rows"], case["width"], case["extra"])
    x = rng.integers(info.min, info.max + 1, shape, dtype=dtype)
    x[0] = info.max  # one row of equal values, one row with a single maximum (outputs at qmax)
    x[-1] = info.min
    x[-1, 0] = info.max
    axis = -1 if case["axis_last"] or case["extra"] is None else 1
    model = qlinear_softmax(x, case["x_scale"], case["y_scale"], case["y_zp"], axis)
    got = run_tvm(model, tmp_path_factory.mktemp("qsoftmax"), x)
    want = run_onnxruntime(model, x)
    assert got.dtype == want.dtype and np.array_equal(got, want), f"{np.sum(got != want)} of {got.size} differ"


def test_qlinear_softmax_overflow_is_refused(tmp_path):
    # a 1-wide softmax with output scale 1/1000: onnxruntime's e * floor(1 / s_y) overflows float32
    x = np.zeros((2, 1), np.int8)
    with pytest.raises(ConversionError, match="overflows"):
        run_tvm(qlinear_softmax(x, 0.1, 0.001, -128, -1), tmp_path, x)


def test_softmax_table_is_onnxruntimes():
    # t[k] = exp((bs - k) s_x) with bs = max(0, ln(FLT_MAX / D) - 5) / s_x: t[0] * D stays below FLT_MAX
    table = contrib_ops.softmax_table(0.1, 17)
    assert table.dtype == np.float32 and table.shape == (256,)
    assert np.all(np.diff(table) < 0) and np.isfinite(table[0] * 17 * np.exp(np.float32(5)) * 0.999)
    assert np.allclose(table[1:] / table[:-1], np.exp(-0.1), rtol=1e-6)


def qgemm(a: np.ndarray, b: np.ndarray, case: dict) -> bytes:
    """One QGemm node: A the graph input, everything else initializers."""
    dtype = a.dtype.type
    n = b.shape[0] if case["trans_b"] else b.shape[1]
    b_scale = np.linspace(0.002, 0.02, n, dtype=np.float32) if case["per_column"] else np.float32(0.01)
    inits = [numpy_helper.from_array(np.array(case["a_scale"], np.float32), "as"),
             numpy_helper.from_array(np.array(case["a_zp"], dtype), "az"),
             numpy_helper.from_array(b, "b"),
             numpy_helper.from_array(np.asarray(b_scale), "bs"),
             numpy_helper.from_array(np.zeros(np.shape(b_scale), np.int8), "bz")]
    names = ["x", "as", "az", "b", "bs", "bz", "", "", ""]
    if case["bias"]:
        rng = np.random.default_rng(case["seed"])
        inits.append(numpy_helper.from_array(rng.integers(-5000, 5000, n).astype(np.int32), "c"))
        names[6] = "c"
    if case["quantized"]:
        # |acc| ~ 73 * 73 * sqrt(K) on uniform operands: outputs of some tens of steps, so rounding is
        # exercised, not only saturation
        y_scale = case["y_spread"] * case["a_scale"] * 0.01 * 100 * np.sqrt(b.size / n)
        inits += [numpy_helper.from_array(np.array(y_scale, np.float32), "ys"),
                  numpy_helper.from_array(np.array(case["y_zp"], dtype), "yz")]
        names[7:] = ["ys", "yz"]
    node = helper.make_node("QGemm", names, ["y"], domain=MS, transB=int(case["trans_b"]), alpha=case["alpha"])
    return one_node(node, a, inits, None if case["quantized"] else TensorProto.FLOAT)


@st.composite
def qgemm_cases(draw):
    signed = draw(st.booleans())
    return dict(signed=signed, m=draw(st.integers(1, 9)), k=draw(st.integers(1, 70)), n=draw(st.integers(1, 40)),
                trans_b=draw(st.booleans()), per_column=draw(st.booleans()), bias=draw(st.booleans()),
                quantized=draw(st.booleans()), alpha=draw(st.sampled_from([1.0, 0.3])),
                a_scale=draw(st.floats(0.01, 0.2)), a_zp=0 if signed else draw(st.sampled_from([128, 3])),
                y_spread=draw(st.floats(0.5, 2.0)), y_zp=draw(st.sampled_from([0, 5])) if signed else 128,
                seed=draw(st.integers(0, 2**31 - 1)))


@settings(max_examples=6, deadline=None)
@given(case=qgemm_cases())
def test_qgemm_equals_onnxruntime(case, tmp_path_factory):
    rng = np.random.default_rng(case["seed"])
    dtype = np.int8 if case["signed"] else np.uint8
    info = np.iinfo(dtype)
    a = rng.integers(info.min, info.max + 1, (case["m"], case["k"]), dtype=dtype)
    shape = (case["n"], case["k"]) if case["trans_b"] else (case["k"], case["n"])
    b = rng.integers(-127, 128, shape, dtype=np.int8)
    model = qgemm(a, b, case)
    got = run_tvm(model, tmp_path_factory.mktemp("qgemm"), a)
    want = run_onnxruntime(model, a)
    assert got.dtype == want.dtype and np.array_equal(got, want), f"{np.sum(got != want)} of {got.size} differ"


FLOAT_CASES = {
    "BiasGelu": lambda rng, x: (helper.make_node("BiasGelu", ["x", "b"], ["y"], domain=MS),
                                [numpy_helper.from_array(rng.standard_normal(x.shape[-1]).astype(np.float32), "b")]),
    "SkipLayerNormalization": lambda rng, x: (
        helper.make_node("SkipLayerNormalization", ["x", "skip", "gamma", "beta"], ["y"], domain=MS, epsilon=1e-6),
        [numpy_helper.from_array(rng.standard_normal(x.shape[1:]).astype(np.float32), "skip"),
         numpy_helper.from_array(rng.uniform(0.5, 1.5, x.shape[-1]).astype(np.float32), "gamma"),
         numpy_helper.from_array(rng.uniform(-0.5, 0.5, x.shape[-1]).astype(np.float32), "beta")]),
    "FusedMatMul": lambda rng, x: (
        helper.make_node("FusedMatMul", ["x", "w"], ["y"], domain=MS, transB=1, alpha=0.125),
        [numpy_helper.from_array(rng.standard_normal((5, x.shape[-1])).astype(np.float32), "w")]),
}


@pytest.mark.parametrize("op", sorted(FLOAT_CASES))
def test_float_contrib_op_close_to_onnxruntime(op, tmp_path):
    rng = np.random.default_rng(3)
    x = (rng.standard_normal((4, 17, 32)) * 2).astype(np.float32)
    node, inits = FLOAT_CASES[op](rng, x)
    model = one_node(node, x, inits, TensorProto.FLOAT)
    got = run_tvm(model, tmp_path, x)
    want = run_onnxruntime(model, x)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=2e-6, atol=2e-6)
