"""Error compensation (passes.compensate): tuned weights and bias corrections equal a brute-force
oracle over every product of the calibration set; the compensated model, rewritten by the pass
and run in onnxruntime, equals multipliers.oracle on the compensated integers; the exact
multiplier changes nothing, byte for byte; bad requests end in one line."""

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

import multipliers
from axmoe_testing import run_oracle, run_ort
from modelfile import metadata
from multipliers.oracle import lut_conv, lut_matmul
from passes import calibration
from passes.approximate import approximate
from passes.calibration import CompensationError
from passes.compensate import MODES, ErrorModel, compensate, uniform_assignment
from runtime.ort import session

EXACT = multipliers.exact_lut()
CONV_CASES = [  # (C, M, H, W, kernel, strides, pads, dilations, group)
    (2, 3, 5, 5, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 1),
    (4, 4, 6, 5, (3, 2), (2, 1), (0, 1, 2, 0), (1, 2), 2),
    (3, 2, 4, 4, (1, 1), (1, 1), (0, 0, 0, 0), (1, 1), 1),
]
MULTS = ["mul8s_1KVA", "mul8s_1L2L", "mul8s_1L2N"]


def _model(nodes, inputs, output_type, inits, opset=18):
    graph = helper.make_graph(nodes, "g", inputs, [helper.make_tensor_value_info("y", output_type, None)], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=10)


def conv_integer(weight, strides, pads, dilations, group, shape):
    node = helper.make_node("ConvInteger", ["x", "w", "xzp"], ["y"], name="op", strides=list(strides),
                            pads=list(pads), dilations=list(dilations), group=group)
    return _model([node], [helper.make_tensor_value_info("x", onnx.TensorProto.UINT8, [None, *shape])],
                  onnx.TensorProto.INT32, [numpy_helper.from_array(weight, "w"),
                                           numpy_helper.from_array(np.uint8(128), "xzp")])


def matmul_integer(weight, shape):
    node = helper.make_node("MatMulInteger", ["x", "w", "xzp"], ["y"], name="op")
    return _model([node], [helper.make_tensor_value_info("x", onnx.TensorProto.UINT8, [None, *shape])],
                  onnx.TensorProto.INT32, [numpy_helper.from_array(weight, "w"),
                                           numpy_helper.from_array(np.uint8(128), "xzp")])


def products_per_weight(a, weight, strides, pads, dilations, group):
    """For every weight element (o, c, *tap): the activations it multiplies, padding as 0
    (pure python over positions)."""
    n, channels, h, w = a.shape
    m, cg, kh, kw = weight.shape
    oh = (h + pads[0] + pads[2] - dilations[0] * (kh - 1) - 1) // strides[0] + 1
    ow = (w + pads[1] + pads[3] - dilations[1] * (kw - 1) - 1) // strides[1] + 1
    out = {}
    for o in range(m):
        for c in range(cg):
            channel = (o // (m // group)) * cg + c
            for i in range(kh):
                for j in range(kw):
                    values = []
                    for img in range(n):
                        for y in range(oh):
                            for x in range(ow):
                                r = y * strides[0] + i * dilations[0] - pads[0]
                                s = x * strides[1] + j * dilations[1] - pads[1]
                                values.append(a[img, channel, r, s] if 0 <= r < h and 0 <= s < w else 0)
                    out[(o, c, i, j)] = np.array(values, np.int64)
    return out


def brute_force_weight(lut, values, w):
    """argmin over w' in [-127, 127] of sum (M(a, w') - a w)^2; ties: w, then closest, then smaller."""
    table = lut.astype(np.int64)
    costs = [(int(((table[values + 128, v + 128] - values * w) ** 2).sum()), abs(v - w), v) for v in range(-127, 128)]
    return min(costs)[2]


def _int32_add_constant(model):
    add = next(n for n in model.graph.node if n.op_type == "Add")
    identity = next(n for n in model.graph.node if n.output[0] in add.input and n.op_type == "Identity")
    init = next(i for i in model.graph.initializer if i.name == identity.input[0])
    return numpy_helper.to_array(init)


@pytest.mark.parametrize("case", CONV_CASES)
@pytest.mark.parametrize("name", MULTS)
def test_conv_corrections_equal_a_brute_force_oracle(case, name):
    channels, m, h, w, kernel, strides, pads, dilations, group = case
    rng = np.random.default_rng(hash((case, name)) % 2**32)
    weight = rng.integers(-120, 121, (m, channels // group, *kernel)).astype(np.int8)
    x = np.clip(rng.normal(140, 40, (3, channels, h, w)), 0, 255).astype(np.uint8)  # skewed, like ReLU outputs
    model = conv_integer(weight, strides, pads, dilations, group, (channels, h, w))
    stats = calibration.collect(model, x)
    mult = multipliers.get(name)
    a = x.astype(np.int64) - 128
    products = products_per_weight(a, weight, strides, pads, dilations, group)
    tuned = np.empty_like(weight)
    for index, values in products.items():
        tuned[index] = brute_force_weight(mult.lut, values, int(weight[index]))
    geometry = dict(strides=strides, pads=pads, dilations=dilations, group=group)
    for mode in ("weights", "bias", "weights+bias"):
        w_used = tuned if "weights" in mode else weight
        diff = lut_conv(a, w_used, mult.lut, **geometry).astype(np.int64) - lut_conv(a, weight, EXACT, **geometry)
        expected_c = np.rint(diff.transpose(1, 0, 2, 3).reshape(m, -1).sum(1) / (diff[:, 0].size))
        out, report = compensate(model, {"op": mult}, stats, mode)
        conv = next(n for n in out.graph.node if n.op_type == "ConvInteger")
        got_w = numpy_helper.to_array(next(i for i in out.graph.initializer if i.name == conv.input[1]))
        np.testing.assert_array_equal(got_w, w_used)
        if "bias" in mode and np.any(expected_c):
            np.testing.assert_array_equal(_int32_add_constant(out).ravel(), -expected_c)
            assert report.nodes[0].bias == expected_c.astype(int).tolist()
        else:
            assert not any(n.op_type == "Add" for n in out.graph.node)
        # the compensated model rewritten by the pass, in onnxruntime, equals the oracle
        rewritten, _ = approximate(out, {"multiplier": name})
        got = session(rewritten.SerializeToString(), threads=1).run(None, {"x": x})[0]
        add = _int32_add_constant(out).astype(np.int64) if any(n.op_type == "Add" for n in out.graph.node) else 0
        np.testing.assert_array_equal(got, lut_conv(a, w_used, mult.lut, **geometry) + add)


@pytest.mark.parametrize("name", MULTS + ["mul8s_1KVP"])
def test_matmul_corrections_equal_a_brute_force_oracle(name):
    rng = np.random.default_rng(5)
    weight = rng.integers(-127, 128, (6, 5)).astype(np.int8)
    x = np.clip(rng.normal(100, 50, (4, 3, 6)), 0, 255).astype(np.uint8)  # (batch, tokens, K)
    model = matmul_integer(weight, (3, 6))
    stats = calibration.collect(model, x)
    mult = multipliers.get(name)
    a = (x.astype(np.int64) - 128).reshape(-1, 6)
    tuned = np.array([[brute_force_weight(mult.lut, a[:, k], int(weight[k, j])) for j in range(5)] for k in range(6)],
                     np.int8)
    out, report = compensate(model, {"op": mult}, stats, "weights+bias")
    mm = next(n for n in out.graph.node if n.op_type == "MatMulInteger")
    stored = next(i for i in out.graph.initializer if i.name == mm.input[1])
    np.testing.assert_array_equal(numpy_helper.to_array(stored), tuned)
    diff = lut_matmul(a, tuned, mult.lut).astype(np.int64) - lut_matmul(a, weight, EXACT)
    expected_c = np.rint(diff.sum(0) / a.shape[0]).astype(np.int64)
    got_c = -_int32_add_constant(out).ravel() if any(n.op_type == "Add" for n in out.graph.node) else np.zeros(5)
    np.testing.assert_array_equal(got_c, expected_c)
    rewritten, _ = approximate(out, {"multiplier": name})
    got = session(rewritten.SerializeToString(), threads=1).run(None, {"x": x})[0]
    a3 = x.astype(np.int64) - 128
    np.testing.assert_array_equal(got, lut_matmul(a3, tuned, mult.lut) - expected_c)


def test_error_model_moments_equal_direct_sums():
    rng = np.random.default_rng(2)
    hist = rng.integers(0, 50, (3, 256))
    lut = multipliers.get("mul8s_1KX5").lut.astype(np.int64)
    model = ErrorModel(lut, hist)
    a = np.arange(-128, 128)
    for h in range(3):
        for w, v in [(5, 7), (-100, -98), (127, 0)]:
            direct = ((lut[:, v + 128] - a * w) * hist[h]).sum()
            assert model.error_sums([h], [w], [v])[0] == direct
            assert model.squared_error_sums([h], [w], [v])[0] == (((lut[:, v + 128] - a * w) ** 2) * hist[h]).sum()


def test_tuning_keeps_weights_of_a_channel_that_is_always_zero():
    # every w' costs the same under a = 0 only (a dead ReLU channel): the weight stays
    hist = np.zeros((1, 256), np.int64)
    hist[0, 128] = 100
    model = ErrorModel(multipliers.get("mul8s_1L2L").lut, hist)
    w = np.arange(-127, 128)
    np.testing.assert_array_equal(model.tune(np.zeros_like(w), w), w)


# ------------------------------------------------------------------ whole models, bias sites
def test_resnet_compensated_and_rewritten_equals_the_oracle_on_compensated_integers(int8_resnet, images):
    stats = calibration.collect(int8_resnet, images)
    for name in ("mul8s_1KVA", "mul8s_1L2L"):
        out, report = compensate(int8_resnet, uniform_assignment(int8_resnet, name), stats, "weights+bias")
        assert report.changed and {n.bias_site for n in report.nodes if n.bias} == {"bias initializer"}
        rewritten, _ = approximate(out, {"multiplier": name})
        np.testing.assert_array_equal(run_ort(rewritten, images), run_oracle(out, rewritten, images))
        recorded = metadata.get(out, metadata.COMPENSATION)
        assert recorded["mode"] == "weights+bias" and recorded["calibration"] == {"n": len(images)}
        assert len(recorded["nodes"]) == len(report.nodes)
        assert all(n.get("weights_changed", 0) >= 0 for n in recorded["nodes"])


@pytest.mark.parametrize("mode", MODES)
def test_exact_multiplier_leaves_the_model_byte_for_byte(int8_resnet, images, mode):
    stats = calibration.collect(int8_resnet, images)
    out, report = compensate(int8_resnet, uniform_assignment(int8_resnet, "exact"), stats, mode)
    assert out.SerializeToString() == int8_resnet.SerializeToString()
    assert not report.changed


def test_mode_none_changes_nothing(int8_resnet, images):
    stats = calibration.collect(int8_resnet, images)
    out, report = compensate(int8_resnet, uniform_assignment(int8_resnet, "mul8s_1KVA"), stats, "none")
    assert out.SerializeToString() == int8_resnet.SerializeToString() and not report.nodes


def qdq(op_type, weight, bias=None, quantized_output=True):
    """float x -> Q -> DQ -> Conv / MatMul [<- DQ(b)] [-> Q] -> y."""
    conv = op_type == "Conv"
    m = weight.shape[0] if conv else weight.shape[1]
    inits = [numpy_helper.from_array(np.float32(0.05), "xs"), numpy_helper.from_array(np.uint8(128), "xzp"),
             numpy_helper.from_array(weight, "w"), numpy_helper.from_array(np.linspace(0.01, 0.02, m, dtype=np.float32),
                                                                            "ws"),
             numpy_helper.from_array(np.zeros(m, np.int8), "wzp"), numpy_helper.from_array(np.float32(0.3), "ys"),
             numpy_helper.from_array(np.uint8(128), "yzp")]
    nodes = [helper.make_node("QuantizeLinear", ["x", "xs", "xzp"], ["xq"]),
             helper.make_node("DequantizeLinear", ["xq", "xs", "xzp"], ["xd"]),
             helper.make_node("DequantizeLinear", ["w", "ws", "wzp"], ["wd"], axis=0 if conv else 1)]
    inputs = ["xd", "wd"]
    if bias is not None:
        inits += [numpy_helper.from_array(bias, "b"),
                  numpy_helper.from_array((np.float32(0.05) * np.linspace(0.01, 0.02, m, dtype=np.float32)), "bs")]
        nodes.append(helper.make_node("DequantizeLinear", ["b", "bs"], ["bd"], axis=0))
        inputs.append("bd")
    attrs = {"pads": [1, 1, 1, 1]} if conv else {}
    nodes.append(helper.make_node(op_type, inputs, ["acc" if quantized_output else "y"], name="op", **attrs))
    out_type = onnx.TensorProto.FLOAT
    if quantized_output:
        nodes.append(helper.make_node("QuantizeLinear", ["acc", "ys", "yzp"], ["y"]))
        out_type = onnx.TensorProto.UINT8
    shape = [None, weight.shape[1], 5, 5] if conv else [None, 3, weight.shape[0]]
    return _model(nodes, [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, shape)], out_type, inits)


def _requantized(acc, op_scale, y_scale=0.3, y_zp=128):
    real = acc.astype(np.float32) * (op_scale / np.float32(y_scale)).astype(np.float32)
    return np.clip(np.rint(real) + y_zp, 0, 255).astype(np.uint8)


@pytest.mark.parametrize("with_bias", [False, True])
def test_qdq_conv_bias_sites_run_the_compensated_integers(with_bias):
    rng = np.random.default_rng(9)
    weight = rng.integers(-127, 128, (3, 2, 3, 3)).astype(np.int8)
    bias = rng.integers(-500, 500, 3).astype(np.int32) if with_bias else None
    model = qdq("Conv", weight, bias)
    x = np.abs(rng.standard_normal((4, 2, 5, 5)).astype(np.float32)) * 3
    stats = calibration.collect(model, x)
    out, report = compensate(model, {"op": "mul8s_1KVA"}, stats, "bias")
    entry = report.nodes[0]
    assert entry.bias_site == ("bias initializer" if with_bias else "new bias input") and any(entry.bias)
    rewritten, _ = approximate(out, {"multiplier": "mul8s_1KVA"})
    got = session(rewritten.SerializeToString(), threads=1).run(None, {"x": x})[0]
    a = np.clip(np.rint(x / np.float32(0.05)) + 128, 0, 255).astype(np.int64) - 128
    acc = lut_conv(a, weight, multipliers.get("mul8s_1KVA").lut, pads=[1, 1, 1, 1]).astype(np.int64)
    b = (bias.astype(np.int64) if with_bias else 0) - np.array(entry.bias)
    scale = (np.float32(0.05) * np.linspace(0.01, 0.02, 3, dtype=np.float32)).astype(np.float32)
    np.testing.assert_array_equal(got, _requantized(acc + b[None, :, None, None], scale[None, :, None, None]))
    # the exact model with the compensated bias still runs (onnxruntime's own QDQ fusion)
    session(out.SerializeToString(), threads=1).run(None, {"x": x})


def test_qdq_matmul_without_bias_gets_a_float_add():
    rng = np.random.default_rng(4)
    weight = rng.integers(-127, 128, (4, 3)).astype(np.int8)
    model = qdq("MatMul", weight, quantized_output=False)
    x = np.abs(rng.standard_normal((5, 3, 4)).astype(np.float32)) * 3
    stats = calibration.collect(model, x)
    out, report = compensate(model, {"op": "mul8s_1KVA"}, stats, "bias")
    entry = report.nodes[0]
    assert entry.bias_site == "float Add"
    rewritten, _ = approximate(out, {"multiplier": "mul8s_1KVA"})
    got = session(rewritten.SerializeToString(), threads=1).run(None, {"x": x})[0]
    a = np.clip(np.rint(x / np.float32(0.05)) + 128, 0, 255).astype(np.int64) - 128
    acc = lut_matmul(a, weight, multipliers.get("mul8s_1KVA").lut)
    scale = (np.float32(0.05) * np.linspace(0.01, 0.02, 3, dtype=np.float32)).astype(np.float32)
    expected = acc.astype(np.float32) * scale + (-np.array(entry.bias)).astype(np.float32) * scale
    np.testing.assert_array_equal(got, expected.astype(np.float32))


def qlinear(op_type, weight, bias=None):
    conv = op_type == "QLinearConv"
    names = ["x", "xs", "xzp", "w", "ws", "wzp", "ys", "yzp"] + (["b"] if bias is not None else [])
    inits = [numpy_helper.from_array(np.float32(0.05), "xs"), numpy_helper.from_array(np.uint8(128), "xzp"),
             numpy_helper.from_array(weight, "w"), numpy_helper.from_array(np.float32(0.01), "ws"),
             numpy_helper.from_array(np.int8(0), "wzp"), numpy_helper.from_array(np.float32(0.3), "ys"),
             numpy_helper.from_array(np.uint8(128), "yzp")]
    if bias is not None:
        inits.append(numpy_helper.from_array(bias, "b"))
    node = helper.make_node(op_type, names, ["y"], name="op", **({"pads": [1, 1, 1, 1]} if conv else {}))
    shape = [None, weight.shape[1], 5, 5] if conv else [None, weight.shape[0]]
    return _model([node], [helper.make_tensor_value_info("x", onnx.TensorProto.UINT8, shape)],
                  onnx.TensorProto.UINT8, inits)


def test_qlinear_conv_bias_input_is_added():
    rng = np.random.default_rng(6)
    weight = rng.integers(-127, 128, (3, 2, 3, 3)).astype(np.int8)
    model = qlinear("QLinearConv", weight)
    x = rng.integers(100, 256, (3, 2, 5, 5)).astype(np.uint8)
    out, report = compensate(model, {"op": "mul8s_1KVA"}, calibration.collect(model, x), "bias")
    assert report.nodes[0].bias_site == "bias input"
    rewritten, _ = approximate(out, {"multiplier": "mul8s_1KVA"})
    got = session(rewritten.SerializeToString(), threads=1).run(None, {"x": x})[0]
    acc = lut_conv(x.astype(np.int64) - 128, weight, multipliers.get("mul8s_1KVA").lut, pads=[1, 1, 1, 1])
    acc = acc.astype(np.int64) - np.array(report.nodes[0].bias)[None, :, None, None]
    np.testing.assert_array_equal(got, _requantized(acc, np.float32(0.05) * np.float32(0.01)))


def test_qlinear_matmul_has_no_bias_and_says_so():
    rng = np.random.default_rng(8)
    weight = rng.integers(-127, 128, (4, 3)).astype(np.int8)
    model = qlinear("QLinearMatMul", weight)
    x = rng.integers(100, 256, (6, 4)).astype(np.uint8)
    out, report = compensate(model, {"op": "mul8s_1KVA"}, calibration.collect(model, x), "bias")
    assert out is model and "no bias input" in report.nodes[0].reason and report.nodes[0].bias is None
    out, report = compensate(model, {"op": "mul8s_1L2L"}, calibration.collect(model, x), "weights+bias")
    assert report.nodes[0].weights_changed and report.nodes[0].status == "compensated"


# ---------------------------------------------------------------------------- bad inputs
def one_line(excinfo) -> str:
    message = str(excinfo.value)
    assert message and "\n" not in message
    return message


def test_unknown_mode_is_one_line():
    model = matmul_integer(np.ones((2, 2), np.int8), (2,))
    stats = calibration.collect(model, np.full((2, 2), 130, np.uint8))
    with pytest.raises(CompensationError) as exc:
        compensate(model, {"op": "mul8s_1KVA"}, stats, "linearr")
    assert "linearr" in one_line(exc) and "weights+bias" in one_line(exc)


def test_statistics_of_another_model_are_one_line():
    model = matmul_integer(np.ones((2, 2), np.int8), (2,))
    other = conv_integer(np.ones((1, 1, 1, 1), np.int8), (1, 1), (0, 0, 0, 0), (1, 1), 1, (1, 2, 2))
    stats = calibration.collect(other, np.full((1, 1, 2, 2), 130, np.uint8))
    stats.nodes = {"else": stats["op"]}
    with pytest.raises(CompensationError) as exc:
        compensate(model, {"op": "mul8s_1KVA"}, stats, "bias")
    assert "no activation statistics for op" in one_line(exc)


def test_an_op_no_calibration_row_reached_is_skipped():
    model = matmul_integer(np.ones((2, 2), np.int8), (2,))
    stats = calibration.collect(model, np.full((1, 2), 130, np.uint8))
    stats["op"].rows, stats["op"].hist[:] = 0, 0
    out, report = compensate(model, {"op": "mul8s_1KVA"}, stats, "bias")
    assert out is model and report.nodes[0].status == "skipped"
