"""QOperator and Integer forms (QLinearConv, QLinearMatMul, ConvInteger, MatMulInteger) as
other tools produce them: every lowering equals the numpy oracle, on shapes hypothesis picks."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

import multipliers
from multipliers import oracle
from passes.approximate import approximate
from runtime.ort import session

MULTS = ["mul8s_1KV8", "mul8s_1KVA", "mul8s_1KVP", "mul8s_1L2J", "mul8s_1L12", "mitchell", "drum:5"]


def model_of(node, inputs, outputs, inits, opset=18):
    graph = helper.make_graph([node], "g", inputs, outputs, inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=10)


def run(model, feeds):
    return session(model.SerializeToString(), threads=1).run(None, feeds)[0]


def computed_lut(report, mult, lowering):
    """The LUT the model out of the pass must compute with. The `decomposed` lowering is
    refused, with the reason, for a multiplier without an exact decomposition: the op is then
    left unchanged and computes exact products; every other case rewrites the one op."""
    if lowering == "decomposed" and not mult.decomposition.exact:
        (node,) = report.nodes
        assert node.status == "skipped" and "no exact decomposition" in node.reason
        return multipliers.exact_lut()
    assert [node.status for node in report.nodes] == ["rewritten"]
    return mult.lut


def requantize(acc, x_scale, w_scale, y_scale, shape):
    m = ((np.float32(x_scale) * w_scale.astype(np.float32)) / np.float32(y_scale)).astype(np.float32)
    return np.clip(np.round(acc.astype(np.float32) * m.reshape(shape)) + 128, 0, 255).astype(np.uint8)


@st.composite
def conv_case(draw):
    group = draw(st.sampled_from([1, 2]))
    cg, mg = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    k = [draw(st.integers(1, 3)) for _ in range(2)]
    dil = [draw(st.integers(1, 2)) for _ in range(2)]
    strides = [draw(st.integers(1, 2)) for _ in range(2)]
    pads = [draw(st.integers(0, 2)) for _ in range(4)]
    size = [draw(st.integers(dil[i] * (k[i] - 1) + 1, 9)) for i in range(2)]
    rng = np.random.default_rng(draw(st.integers(0, 2**31)))
    x = rng.integers(0, 256, (draw(st.integers(1, 2)), group * cg, *size)).astype(np.uint8)
    w = rng.integers(-127, 128, (group * mg, cg, *k)).astype(np.int8)
    attrs = dict(strides=strides, pads=pads, dilations=dil, group=group, kernel_shape=k)
    return x, w, attrs, draw(st.sampled_from(MULTS)), draw(st.sampled_from(["lut", "decomposed"]))


@settings(max_examples=25)
@given(conv_case())
def test_conv_integer(case):
    x, w, attrs, name, lowering = case
    mult = multipliers.get(name)
    node = helper.make_node("ConvInteger", ["x", "w", "xzp"], ["y"], **attrs)
    model = model_of(node, [helper.make_tensor_value_info("x", TensorProto.UINT8, None)],
                     [helper.make_tensor_value_info("y", TensorProto.INT32, None)],
                     [numpy_helper.from_array(w, "w"), numpy_helper.from_array(np.array(128, np.uint8), "xzp")])
    out, report = approximate(model, {"multiplier": name, "lowering": lowering})
    lut = computed_lut(report, mult, lowering)
    expected = oracle.lut_conv(x.astype(np.int64) - 128, w, lut, strides=attrs["strides"],
                               pads=attrs["pads"], dilations=attrs["dilations"], group=attrs["group"])
    assert np.array_equal(run(out, {"x": x}), expected)


@settings(max_examples=25)
@given(conv_case())
def test_qlinear_conv(case):
    x, w, attrs, name, lowering = case
    mult = multipliers.get(name)
    m = w.shape[0]
    rng = np.random.default_rng(0)
    w_scale = rng.uniform(0.001, 0.01, m).astype(np.float32)
    bias = rng.integers(-2000, 2000, m).astype(np.int32)
    inits = [numpy_helper.from_array(a, n) for a, n in [
        (np.float32(0.05), "xs"), (np.uint8(128), "xzp"), (w, "w"), (w_scale, "ws"), (np.zeros(m, np.int8), "wzp"),
        (np.float32(0.5), "ys"), (np.uint8(128), "yzp"), (bias, "b")]]
    node = helper.make_node("QLinearConv", ["x", "xs", "xzp", "w", "ws", "wzp", "ys", "yzp", "b"], ["y"], **attrs)
    model = model_of(node, [helper.make_tensor_value_info("x", TensorProto.UINT8, None)],
                     [helper.make_tensor_value_info("y", TensorProto.UINT8, None)], inits)
    out, report = approximate(model, {"multiplier": name, "lowering": lowering})
    lut = computed_lut(report, mult, lowering)
    acc = oracle.lut_conv(x.astype(np.int64) - 128, w, lut, strides=attrs["strides"], pads=attrs["pads"],
                          dilations=attrs["dilations"], group=attrs["group"]).astype(np.int64)
    acc += bias.reshape(1, -1, 1, 1)
    assert np.array_equal(run(out, {"x": x}), requantize(acc, 0.05, w_scale, 0.5, (1, -1, 1, 1)))


@settings(max_examples=25)
@given(st.integers(1, 5), st.integers(1, 70), st.integers(1, 6), st.sampled_from([(), (2,), (2, 3)]),
       st.sampled_from(MULTS), st.sampled_from(["lut", "decomposed", "auto"]), st.integers(0, 2**31))
def test_matmul_integer_and_qlinear_matmul(m, k, n, batch, name, lowering, seed):
    mult = multipliers.get(name)
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 256, batch + (m, k)).astype(np.uint8)
    b = rng.integers(-127, 128, (k, n)).astype(np.int8)
    node = helper.make_node("MatMulInteger", ["a", "b", "azp"], ["y"])
    model = model_of(node, [helper.make_tensor_value_info("a", TensorProto.UINT8, None)],
                     [helper.make_tensor_value_info("y", TensorProto.INT32, None)],
                     [numpy_helper.from_array(b, "b"), numpy_helper.from_array(np.array(128, np.uint8), "azp")])
    out, report = approximate(model, {"multiplier": name, "lowering": lowering})
    expected = oracle.lut_matmul(a.astype(np.int64) - 128, b, computed_lut(report, mult, lowering))
    assert np.array_equal(run(out, {"a": a}), expected)
    inits = [numpy_helper.from_array(v, nm) for v, nm in [
        (np.float32(0.02), "as"), (np.uint8(128), "azp"), (b, "b"), (np.float32(0.004), "bs"),
        (np.int8(0), "bzp"), (np.float32(0.3), "ys"), (np.uint8(128), "yzp")]]
    node = helper.make_node("QLinearMatMul", ["a", "as", "azp", "b", "bs", "bzp", "ys", "yzp"], ["y"])
    model = model_of(node, [helper.make_tensor_value_info("a", TensorProto.UINT8, None)],
                     [helper.make_tensor_value_info("y", TensorProto.UINT8, None)], inits)
    out, report = approximate(model, {"multiplier": name, "lowering": lowering})
    expected = oracle.lut_matmul(a.astype(np.int64) - 128, b, computed_lut(report, mult, lowering))
    assert np.array_equal(run(out, {"a": a}), requantize(expected, 0.02, np.float32(0.004), 0.3, (-1,)))


def qdq_conv(x_zp=128, x_dtype=TensorProto.UINT8, w_zp=0, weight_dtype=np.int8):
    """x -> Q -> DQ(x_zp) -> Conv <- DQ(w, w_zp) : a QDQ conv whose zero points we choose."""
    rng = np.random.default_rng(0)
    w = rng.integers(-100, 100, (4, 3, 3, 3)).astype(weight_dtype)
    np_x = np.uint8 if x_dtype == TensorProto.UINT8 else np.int8
    inits = [numpy_helper.from_array(v, n) for v, n in [
        (np.float32(0.05), "xs"), (np.array(x_zp, np_x), "xzp"), (w, "w"), (np.float32(0.01), "ws"),
        (np.array(w_zp, weight_dtype), "wzp")]]
    nodes = [helper.make_node("QuantizeLinear", ["x", "xs", "xzp"], ["xq"]),
             helper.make_node("DequantizeLinear", ["xq", "xs", "xzp"], ["xd"]),
             helper.make_node("DequantizeLinear", ["w", "ws", "wzp"], ["wd"]),
             helper.make_node("Conv", ["xd", "wd"], ["y"], name="conv", pads=[1, 1, 1, 1])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, None)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=10)


@pytest.mark.parametrize("kwargs, reason", [
    (dict(x_zp=3), "asymmetric activation"),
    (dict(x_zp=0, x_dtype=TensorProto.INT8, w_zp=2), "weight zero point"),
    (dict(weight_dtype=np.uint8), "weight dtype uint8"),
])
def test_asymmetric_or_unsigned_operands_are_skipped_with_the_reason(kwargs, reason):
    model = qdq_conv(**kwargs)
    out, report = approximate(model, {"multiplier": "mul8s_1L2L"})
    (node,) = report.nodes
    assert node.status == "skipped" and reason in node.reason
    assert [n.op_type for n in out.graph.node] == [n.op_type for n in model.graph.node]


def test_symmetric_int8_activation_and_float_output():
    """int8 activations with zero point 0 are signed operands; an unquantized output stays float."""
    model = qdq_conv(x_zp=0, x_dtype=TensorProto.INT8)
    x = np.random.default_rng(1).standard_normal((2, 3, 6, 6)).astype(np.float32)
    mult = multipliers.get("mitchell")
    out, report = approximate(model, {"multiplier": "mitchell"})
    assert report.summary()["lowerings"] == {"lut": 1}
    xq = np.clip(np.round(x / np.float32(0.05)), -128, 127).astype(np.int64)
    w = numpy_helper.to_array(next(i for i in model.graph.initializer if i.name == "w"))
    acc = oracle.lut_conv(xq, w, mult.lut, pads=[1, 1, 1, 1])
    expected = acc.astype(np.float32) * (np.float32(0.05) * np.float32(0.01))
    assert np.array_equal(run(out, {"x": x}), expected)


def test_overflow_risk_is_refused(tmp_path):
    big = tmp_path / "big.npy"
    np.save(big, np.full((256, 256), 32767, np.int32))
    k = 70000  # 32767 * 70000 >= 2^31
    node = helper.make_node("MatMulInteger", ["a", "b", "azp"], ["y"])
    model = model_of(node, [helper.make_tensor_value_info("a", TensorProto.UINT8, None)],
                     [helper.make_tensor_value_info("y", TensorProto.INT32, None)],
                     [numpy_helper.from_array(np.ones((k, 1), np.int8), "b"),
                      numpy_helper.from_array(np.array(128, np.uint8), "azp")])
    _, report = approximate(model, {"multiplier": str(big)})
    (node,) = report.nodes
    assert node.status == "skipped" and "int32 overflow" in node.reason
    _, report = approximate(model, {"multiplier": "mul8s_1L2L"})  # max|LUT| 16384: 16384 * 70000 < 2^31
    assert report.nodes[0].status == "rewritten"
