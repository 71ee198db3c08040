"""Activation statistics for compensation (passes.calibration): histograms equal a direct count
over every product position (padding as a = 0), experts see only their routed rows, and bad
calibration requests end in one line."""

import numpy as np
import onnx
import onnx_ir as ir
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import helper, numpy_helper

from modelfile import metadata
from passes import calibration
from passes.calibration import CompensationError


def direct_conv_count(a, kernel, strides, pads, dilations):
    """hist[c, tap, a + 128]: loop over images, output positions, taps and channels."""
    n, c, h, w = a.shape
    oh = (h + pads[0] + pads[2] - dilations[0] * (kernel[0] - 1) - 1) // strides[0] + 1
    ow = (w + pads[1] + pads[3] - dilations[1] * (kernel[1] - 1) - 1) // strides[1] + 1
    hist = np.zeros((c, kernel[0] * kernel[1], 256), np.int64)
    for img in range(n):
        for y in range(oh):
            for x in range(ow):
                for tap, (i, j) in enumerate(np.ndindex(*kernel)):
                    r, s = y * strides[0] + i * dilations[0] - pads[0], x * strides[1] + j * dilations[1] - pads[1]
                    for ch in range(c):
                        value = a[img, ch, r, s] if 0 <= r < h and 0 <= s < w else 0
                        hist[ch, tap, value + 128] += 1
    return hist


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 2), st.integers(1, 3), st.integers(3, 6), st.integers(3, 6), st.sampled_from([(1, 1), (3, 3),
       (2, 3)]), st.integers(1, 2), st.integers(0, 2), st.integers(1, 2), st.integers(0, 10_000))
def test_conv_histogram_counts_every_product_position_padding_as_zero(n, c, h, w, kernel, stride, pad, dilation, seed):
    if (h + 2 * pad - dilation * (kernel[0] - 1) - 1) < 0 or (w + 2 * pad - dilation * (kernel[1] - 1) - 1) < 0:
        return
    a = np.random.default_rng(seed).integers(-128, 128, (n, c, h, w))
    attributes = {"kernel_shape": list(kernel), "strides": [stride, stride], "pads": [pad, pad, pad, pad],
                  "dilations": [dilation, dilation]}
    got = calibration.conv_histogram(a, attributes)
    np.testing.assert_array_equal(got, direct_conv_count(a, kernel, [stride] * 2, [pad] * 4, [dilation] * 2))


def test_conv_histogram_asymmetric_pads():
    a = np.random.default_rng(1).integers(-128, 128, (2, 2, 5, 4))
    attributes = {"kernel_shape": [3, 2], "strides": [2, 1], "pads": [0, 1, 2, 0], "dilations": [1, 2]}
    np.testing.assert_array_equal(calibration.conv_histogram(a, attributes),
                                  direct_conv_count(a, (3, 2), [2, 1], [0, 1, 2, 0], [1, 2]))


@settings(max_examples=25, deadline=None)
@given(st.lists(st.integers(1, 4), min_size=1, max_size=3), st.integers(1, 6), st.integers(0, 10_000))
def test_matmul_histogram_counts_every_row_per_k(lead, k, seed):
    a = np.random.default_rng(seed).integers(-128, 128, (*lead, k))
    hist = np.zeros((k, 1, 256), np.int64)
    for row in a.reshape(-1, k):
        for i, value in enumerate(row):
            hist[i, 0, value + 128] += 1
    np.testing.assert_array_equal(calibration.matmul_histogram(a), hist)


def qdq_conv_model(zero_point=128, pads=(1, 1, 1, 1), strides=(1, 1), group=1):
    """float x -> Q(0.05, zp) -> DQ -> Conv(w int8) -> y."""
    rng = np.random.default_rng(0)
    dtype = np.uint8 if zero_point == 128 else np.int8
    weight = rng.integers(-100, 100, (4, 4 // group, 3, 3)).astype(np.int8)
    inits = [numpy_helper.from_array(np.float32(0.05), "xs"),
             numpy_helper.from_array(np.array(zero_point, dtype), "xzp"),
             numpy_helper.from_array(weight, "w"), numpy_helper.from_array(np.full(4, 0.01, np.float32), "ws"),
             numpy_helper.from_array(np.zeros(4, np.int8), "wzp")]
    nodes = [helper.make_node("QuantizeLinear", ["x", "xs", "xzp"], ["xq"]),
             helper.make_node("DequantizeLinear", ["xq", "xs", "xzp"], ["xd"]),
             helper.make_node("DequantizeLinear", ["w", "ws", "wzp"], ["wd"], axis=0),
             helper.make_node("Conv", ["xd", "wd"], ["y"], name="conv", pads=list(pads), strides=list(strides),
                              group=group)]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [None, 4, 6, 6])],
                              [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=10)


@pytest.mark.parametrize("zero_point", [128, 0])
def test_collect_counts_the_quantized_activation_of_the_exact_model(zero_point):
    model = qdq_conv_model(zero_point, pads=(1, 0, 2, 1), strides=(2, 1))
    x = np.random.default_rng(3).standard_normal((5, 4, 6, 6)).astype(np.float32) * 4
    stats = calibration.collect(model, x, batch=2)
    lo, hi = (0, 255) if zero_point == 128 else (-128, 127)
    a = np.clip(np.rint(x / np.float32(0.05)) + zero_point, lo, hi).astype(np.int64) - zero_point
    node = stats["conv"]
    np.testing.assert_array_equal(node.hist, direct_conv_count(a, (3, 3), [2, 1], [1, 0, 2, 1], [1, 1]))
    assert node.rows == 5 and node.samples == 5 * 4 * 5 and node.kind == "conv"
    np.testing.assert_array_equal(node.channel_hist, node.hist.sum(axis=1))


def test_collect_reads_an_integer_op_input_directly():
    w = np.random.default_rng(0).integers(-100, 100, (3, 2)).astype(np.int8)
    graph = helper.make_graph([helper.make_node("MatMulInteger", ["x", "w", "xzp"], ["y"], name="mm")], "g",
                              [helper.make_tensor_value_info("x", onnx.TensorProto.UINT8, [None, 4, 3])],
                              [helper.make_tensor_value_info("y", onnx.TensorProto.INT32, None)],
                              [numpy_helper.from_array(w, "w"), numpy_helper.from_array(np.uint8(128), "xzp")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=10)
    x = np.random.default_rng(1).integers(0, 256, (6, 4, 3)).astype(np.uint8)
    stats = calibration.collect(model, x, batch=4)
    np.testing.assert_array_equal(stats["mm"].hist, calibration.matmul_histogram(x.astype(np.int64) - 128))
    assert stats["mm"].rows == 24


def _routing_counts(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    """Rows routed to each expert, from the gate's own TopK indices (an extra graph output)."""
    from runtime.ort import session

    topk = next(n for n in model.graph.node if n.op_type == "TopK")
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    probe.graph.output.append(helper.make_tensor_value_info(topk.output[1], onnx.TensorProto.INT64, None))
    indices = session(probe.SerializeToString(), threads=1).run([topk.output[1]], {"input": x})[0]
    return np.bincount(indices.ravel(), minlength=metadata.get(model, metadata.EXPERTS))


def test_expert_statistics_use_only_the_rows_routed_to_it(int8_resnet, images):
    stats = calibration.collect(int8_resnet, images, batch=5)
    routed = _routing_counts(int8_resnet, images)
    assert routed.sum() == len(images) and (routed < len(images)).all()  # hard top-1, not all rows everywhere
    experts = {e: stats[f"/stages/stages.2/experts.{e}/experts.{e}.0/conv1/Conv"] for e in range(len(routed))}
    for e, node in experts.items():
        assert node.rows == routed[e]
        assert node.hist.sum() == routed[e] * node.hist.shape[0] * node.hist.shape[1] * 8 * 8  # 8x8 outputs, pad 1
    trunk = stats["/stem/stem.0/Conv"]
    assert trunk.rows == len(images)


def test_expert_histograms_equal_a_count_of_the_gathered_rows(int8_resnet, images):
    from runtime.ort import session

    stats = calibration.collect(int8_resnet, images)
    ops = {op.name: op for op in calibration.candidates(int8_resnet)}
    name = next(n for n in ops if "experts.1/experts.1.0/conv1" in n)
    probe = onnx.ModelProto()
    probe.CopyFrom(int8_resnet)
    probe.graph.output.append(helper.make_tensor_value_info(ops[name].x.name, onnx.TensorProto.UINT8, None))
    q = session(probe.SerializeToString(), threads=1).run([ops[name].x.name], {"input": images})[0]
    a = q.astype(np.int64) - 128
    expected = calibration.conv_histogram(a, ops[name].attributes) if len(a) else np.zeros_like(stats[name].hist)
    np.testing.assert_array_equal(stats[name].hist, expected)
    assert stats[name].rows == len(a)


# ---------------------------------------------------------------------------- bad inputs
def one_line(excinfo) -> str:
    message = str(excinfo.value)
    assert message and "\n" not in message
    return message


def test_no_images_is_one_line():
    with pytest.raises(CompensationError) as exc:
        calibration.collect(qdq_conv_model(), np.zeros((0, 4, 6, 6), np.float32))
    assert "N = 0" in one_line(exc)


def test_images_of_the_wrong_shape_are_one_line():
    with pytest.raises(CompensationError) as exc:
        calibration.collect(qdq_conv_model(), np.zeros((2, 4, 8, 8), np.float32))
    assert "(4, 8, 8)" in one_line(exc) and "(4, 6, 6)" in one_line(exc)


def _with_data(model, data):
    model = onnx.ModelProto.FromString(model.SerializeToString())
    metadata.write(model, {metadata.DATA: data, metadata.DATASET: data.get("dataset", "")})
    return model


@pytest.mark.parametrize("n", [0, -3])
def test_calibration_images_n_zero_is_one_line(n):
    with pytest.raises(CompensationError) as exc:
        calibration.calibration_images(_with_data(qdq_conv_model(), {"dataset": "fashion-mnist"}), n=n)
    assert f"N = {n}" in one_line(exc)


def test_calibration_images_unknown_dataset_is_one_line():
    with pytest.raises(CompensationError) as exc:
        calibration.calibration_images(qdq_conv_model(), "fashion-mnsit", n=4)
    assert "fashion-mnsit" in one_line(exc)


def test_calibration_images_model_without_dataset_is_one_line():
    with pytest.raises(CompensationError) as exc:
        calibration.calibration_images(qdq_conv_model(), n=4)
    assert "names no dataset" in one_line(exc)


def test_calibration_images_unreachable_data_is_one_line(tmp_path):
    model = _with_data(qdq_conv_model(), {"dataset": "fashion-mnist", "image_size": 6})
    with pytest.raises(CompensationError) as exc:
        calibration.calibration_images(model, n=4, root=tmp_path)
    assert "not reachable" in one_line(exc)


def test_calibration_images_of_the_wrong_size_are_one_line(int8_resnet):
    # tiny-imagenet is 64x64, the model takes 32x32: refused before any file is read
    with pytest.raises(CompensationError) as exc:
        calibration.calibration_images(int8_resnet, "tiny-imagenet", n=4)
    assert "64x64" in one_line(exc) and "32x32" in one_line(exc)


def test_calibration_images_from_the_models_own_dataset(int8_resnet, tmp_path):
    from models.data import data_root

    model = _with_data(int8_resnet, {"dataset": "fashion-mnist", "image_size": 32, "mean": [0.5] * 3,
                                     "std": [0.25] * 3})
    try:
        x, source = calibration.calibration_images(model, n=3, root=data_root())
    except CompensationError as exc:
        pytest.skip(f"Fashion-MNIST not available here: {exc}")
    from models.datasets import load_dataset

    raw = load_dataset("fashion-mnist", "train", image_size=32, limit=3).images.numpy()
    np.testing.assert_allclose(x[:, 0], (raw[:, 0] / 255 - 0.5) / 0.25, rtol=1e-6, atol=1e-6)
    assert x.shape == (3, 3, 32, 32) and x.dtype == np.float32
    assert source == {"dataset": "fashion-mnist", "split": "train", "n": 3}


def test_candidates_are_the_pass_candidates(int8_resnet):
    from passes.candidates import IntegerOp
    from passes.rules import find_candidates

    names = [c.name for _, c in find_candidates(ir.from_proto(int8_resnet).graph) if isinstance(c, IntegerOp)]
    assert [op.name for op in calibration.candidates(int8_resnet)] == names
