"""The optional `linear` input of axmoe.ApproxConvInteger / ApproxMatMulInteger (the linear
compensation term, modelfile.ops.LINEAR_FRACTION_BITS): every kernel ISA this CPU has and both
paths equal the numpy oracle plus t = floor((g * S + 2^15) / 2^16), S the sum of the signed
activations of each receptive field (oracle: all-ones weights through the activation LUT), bit
for bit; the schema passes onnx.checker's full check and keeps the inferred shape; bad
coefficients end in one-line errors."""

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from modelfile.ops import APPROX_CONV_INTEGER, DOMAIN, LINEAR_FRACTION_BITS, opset_imports, register_schemas
from multipliers.oracle import lut_conv, lut_matmul, wrap_int32
from op_models import integer_op_model, linear_reference, lut, sessions, signed

CONV_CASES = {  # n, c, m, group, size, kernel, strides, dilations, pads (None: auto_pad SAME_UPPER)
    "3x3-pad": (2, 3, 4, 1, [6, 7], [3, 3], [1, 1], [1, 1], [1, 1, 1, 1]),
    "grouped-stride-dilation": (1, 4, 6, 2, [9, 8], [3, 2], [2, 1], [1, 2], [0, 2, 1, 0]),
    "depthwise": (2, 5, 5, 5, [5, 5], [3, 3], [1, 1], [1, 1], [1, 1, 1, 1]),
    "1d": (2, 3, 5, 1, [11], [3], [2], [2], [3, 1]),
    "same-upper": (1, 2, 3, 1, [5, 6], [2, 3], [2, 2], [1, 1], None),
    "wide-1x1": (1, 40, 70, 1, [3, 3], [1, 1], [1, 1], [1, 1], [0, 0, 0, 0]),
}


def _coefficients(rng, m):
    g = rng.integers(-(1 << 20), 1 << 20, m)
    g[0] = 0
    if m > 1:
        g[1] = -(1 << 31) + 1  # the extreme the kernels accept
    return g.astype(np.int64)


def _same_upper(size, kernel, strides, dilations):
    begin, end = [], []
    for n, k, s, d in zip(size, kernel, strides, dilations):
        total = max(0, (-(-n // s) - 1) * s + d * (k - 1) + 1 - n)
        begin.append(total // 2), end.append(total - total // 2)
    return begin + end


@pytest.mark.parametrize("x_form", ["uint8", "int8"])
@pytest.mark.parametrize("case", CONV_CASES.values(), ids=CONV_CASES.keys())
def test_conv_linear_term_equals_the_oracle_on_every_kernel(case, x_form):
    n, c, m, group, size, kernel, strides, dilations, pads = case
    rng = np.random.default_rng(len(size) * 100 + c * 10 + m)
    if x_form == "uint8":
        x, x_zp = rng.integers(0, 256, (n, c, *size), dtype=np.uint8), 128
    else:
        x, x_zp = rng.integers(-128, 128, (n, c, *size), dtype=np.int8), 0
    w = rng.integers(-128, 128, (m, c // group, *kernel), dtype=np.int8)
    g = _coefficients(rng, m)
    attrs = dict(group=group, strides=strides, dilations=dilations)
    if pads is None:
        attrs["auto_pad"] = "SAME_UPPER"
        pads = _same_upper(size, kernel, strides, dilations)
    else:
        attrs["pads"] = pads
    a = signed(x, x_zp)
    geometry = dict(strides=strides, pads=pads, dilations=dilations, group=group)
    term = linear_reference(a, w.shape, g, kind="conv", **geometry)
    for constant in ((), ("linear", "w")):
        model, feeds = integer_op_model(APPROX_CONV_INTEGER, x, w, x_zp, None, linear=g, constant=constant, **attrs)
        for name in ("mul8s_1L2L", "mitchell"):
            table = lut(name)
            want = wrap_int32(lut_conv(a, w, table, **geometry).astype(np.int64) + term)
            for variant, sess in sessions(model).items():
                (got,) = sess.run(None, {**feeds, "lut": table})
                assert np.array_equal(got, want), (variant, name, constant, np.argwhere(got != want)[:5])


@pytest.mark.parametrize("shapes", [((7, 9), (9, 5)), ((2, 3, 6), (6, 4)), ((2, 3, 6), (2, 6, 4)), ((6,), (6, 3))],
                         ids=["2d", "batched-a", "batched-b", "vector-a"])
@pytest.mark.parametrize("x_form", ["uint8", "int8"])
def test_matmul_linear_term_equals_the_oracle_on_every_kernel(shapes, x_form):
    a_shape, b_shape = shapes
    rng = np.random.default_rng(sum(a_shape) + 3 * sum(b_shape))
    if x_form == "uint8":
        x, x_zp = rng.integers(0, 256, a_shape, dtype=np.uint8), 128
    else:
        x, x_zp = rng.integers(-128, 128, a_shape, dtype=np.int8), 0
    w = rng.integers(-128, 128, b_shape, dtype=np.int8)
    g = _coefficients(rng, b_shape[-1])
    a = signed(x, x_zp)
    a2 = a.reshape(1, -1) if a.ndim == 1 else a
    term = linear_reference(a2, (b_shape[-2], b_shape[-1]), g, kind="matmul")
    if len(b_shape) == 3:
        term = np.broadcast_to(term, (b_shape[0], *term.shape[-2:]))
    model, feeds = integer_op_model("ApproxMatMulInteger", x, w, x_zp, None, linear=g)
    for name in ("mul8s_1KVA", "random"):
        table = lut(name)
        exact = lut_matmul(a2, w, table).astype(np.int64)
        want = wrap_int32(exact + term)
        if a.ndim == 1:
            want = want.reshape(want.shape[-1])
        for variant, sess in sessions(model).items():
            (got,) = sess.run(None, {**feeds, "lut": table})
            assert got.shape == want.shape and np.array_equal(got, want), (variant, name)


def test_zero_coefficients_change_nothing():
    rng = np.random.default_rng(3)
    x = rng.integers(0, 256, (2, 3, 5, 5), dtype=np.uint8)
    w = rng.integers(-128, 128, (4, 3, 3, 3), dtype=np.int8)
    with_term, feeds = integer_op_model(APPROX_CONV_INTEGER, x, w, 128, None, linear=np.zeros(4, np.int64),
                                        pads=[1, 1, 1, 1])
    without, _ = integer_op_model(APPROX_CONV_INTEGER, x, w, 128, None, pads=[1, 1, 1, 1])
    table = lut("mul8s_1KX5")
    for (variant, a), b in zip(sessions(with_term).items(), sessions(without).values()):
        assert np.array_equal(a.run(None, {**feeds, "lut": table})[0],
                              b.run(None, {k: v for k, v in feeds.items() if k != "linear"} | {"lut": table})[0])


def test_fraction_bits_are_the_convention():
    # t = floor((g * S + 2^15) / 2^16): g = 2^16 adds S itself, g = -2^15 rounds half up
    assert LINEAR_FRACTION_BITS == 16
    x = np.array([[130, 127, 128]], np.uint8)  # a = 2, -1, 0: S = 1
    w = np.zeros((3, 3), np.int8)
    model, feeds = integer_op_model("ApproxMatMulInteger", x, w, 128, None,
                                    linear=np.array([1 << 16, -(1 << 15), -(1 << 15) - 1], np.int64))
    for sess in sessions(model).values():
        (got,) = sess.run(None, {**feeds, "lut": lut("mul8s_1KVA")})
        assert got.tolist() == [[1, 0, -1]]


@pytest.mark.parametrize("linear, message", [
    (np.zeros(3, np.int32), "linear must be int64 [4]"),
    (np.zeros(5, np.int64), "linear must be int64 [4]"),
    (np.zeros((4, 1), np.int64), "linear must be int64 [4]"),
    (np.array([0, 1 << 31, 0, 0], np.int64), "linear[1] = 2147483648 is out of range"),
])
def test_bad_coefficients_are_one_line_errors(linear, message):
    x = np.zeros((1, 2, 4, 4), np.uint8) + 128
    w = np.zeros((4, 2, 3, 3), np.int8)
    model, feeds = integer_op_model(APPROX_CONV_INTEGER, x, w, 128, None, linear=np.zeros(4, np.int64))
    model = onnx.load_from_string(model)
    model.graph.input[-1].type.tensor_type.elem_type = onnx.helper.np_dtype_to_tensor_dtype(linear.dtype)
    del model.graph.input[-1].type.tensor_type.shape.dim[:]
    (sess,) = list(sessions(model.SerializeToString()).values())[:1]
    with pytest.raises(Exception) as info:
        sess.run(None, {**feeds, "linear": linear, "lut": lut("mul8s_1KVA")})
    text = str(info.value)
    assert message in text and "ApproxConvInteger" in text


def test_schema_full_check_and_shape_inference_with_the_linear_input():
    register_schemas()
    inits = [numpy_helper.from_array(np.zeros((4, 2, 3, 3), np.int8), "w"),
             numpy_helper.from_array(np.uint8(128), "xzp"),
             numpy_helper.from_array(np.zeros((256, 256), np.int32), "lut"),
             numpy_helper.from_array(np.arange(4, dtype=np.int64), "linear")]
    node = helper.make_node(APPROX_CONV_INTEGER, ["x", "w", "xzp", "", "lut", "linear"], ["y"], domain=DOMAIN,
                            pads=[1, 1, 1, 1])
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.UINT8, [2, 2, 5, 5])],
                              [helper.make_tensor_value_info("y", TensorProto.INT32, [2, 4, 5, 5])], inits)
    model = helper.make_model(graph, opset_imports=opset_imports(), ir_version=10)
    onnx.checker.check_model(model, full_check=True)
    onnx.shape_inference.infer_shapes(model, strict_mode=True)  # the declared [2, 4, 5, 5] is what it infers
    wrong = onnx.ModelProto()
    wrong.CopyFrom(model)
    wrong.graph.output[0].type.tensor_type.shape.dim[1].dim_value = 3
    with pytest.raises(onnx.shape_inference.InferenceError):
        onnx.shape_inference.infer_shapes(wrong, strict_mode=True)
    bad = onnx.ModelProto()
    bad.CopyFrom(model)
    bad.graph.initializer[-1].CopyFrom(numpy_helper.from_array(np.arange(4, dtype=np.int32), "linear"))
    with pytest.raises((onnx.checker.ValidationError, onnx.shape_inference.InferenceError), match="linear"):
        onnx.checker.check_model(bad, full_check=True)
