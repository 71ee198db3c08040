"""With the exact multiplier's LUT, axmoe.ApproxConvInteger / ApproxMatMulInteger equal
onnxruntime's own ConvInteger / MatMulInteger bit for bit (DESIGN invariant 2), for every
kernel ISA and path, both activation forms, and auto_pad / groups / 1-D convs."""

import numpy as np
import onnxruntime as ort
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper

import multipliers
from op_models import integer_op_model, sessions

EXACT = multipliers.exact().lut


def standard_op(op: str, x: np.ndarray, w: np.ndarray, x_zp, **attrs) -> np.ndarray:
    types = {np.dtype(np.uint8): TensorProto.UINT8, np.dtype(np.int8): TensorProto.INT8}
    names = ["x", "w"] + (["x_zp"] if x_zp is not None else [])
    inputs = [helper.make_tensor_value_info("x", types[x.dtype], x.shape),
              helper.make_tensor_value_info("w", TensorProto.INT8, w.shape)]
    feeds = {"x": x, "w": w}
    if x_zp is not None:
        inputs.append(helper.make_tensor_value_info("x_zp", types[x.dtype], []))
        feeds["x_zp"] = np.asarray(x_zp, x.dtype)
    graph = helper.make_graph([helper.make_node(op, names, ["y"], **attrs)], op, inputs,
                              [helper.make_tensor_value_info("y", TensorProto.INT32, None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)[0]


def assert_all_variants_equal(op, x, w, x_zp, attrs):
    want = standard_op(op.removeprefix("Approx"), x, w, x_zp, **attrs)
    model, feeds = integer_op_model(op, x, w, x_zp, None, **attrs)
    for variant, sess in sessions(model).items():
        (got,) = sess.run(None, {**feeds, "lut": EXACT})
        assert got.shape == want.shape and np.array_equal(got, want), (variant, op, x.shape, w.shape, attrs)


@settings(max_examples=25)
@given(spatial=st.sampled_from([1, 2]), group=st.sampled_from([1, 2, 4]), cg=st.integers(1, 5),
       mg=st.integers(1, 4), k=st.integers(1, 3), stride=st.integers(1, 2), dilation=st.integers(1, 2),
       auto_pad=st.sampled_from(["NOTSET", "SAME_UPPER", "SAME_LOWER", "VALID"]), pad=st.integers(0, 2),
       size=st.integers(5, 12), n=st.integers(1, 2), uint8=st.booleans(), seed=st.integers(0, 2**31 - 1))
def test_conv_with_the_exact_lut_equals_conv_integer(spatial, group, cg, mg, k, stride, dilation, auto_pad, pad,
                                                     size, n, uint8, seed):
    assume(not (auto_pad.startswith("SAME") and dilation > 1))  # onnxruntime's ConvInteger refuses these
    rng = np.random.default_rng(seed)
    shape = (n, cg * group) + (size,) * spatial
    x = rng.integers(0, 256, shape, dtype=np.uint8) if uint8 else rng.integers(-128, 128, shape, dtype=np.int8)
    w = rng.integers(-128, 128, (mg * group, cg) + (k,) * spatial, dtype=np.int8)
    attrs = dict(group=group, strides=[stride] * spatial, dilations=[dilation] * spatial)
    if auto_pad == "NOTSET":
        attrs["pads"] = [pad] * (2 * spatial)
    else:
        attrs["auto_pad"] = auto_pad
    assert_all_variants_equal("ApproxConvInteger", x, w, 128 if uint8 else 0, attrs)


@settings(max_examples=25)
@given(m=st.integers(1, 70), k=st.integers(1, 50), n=st.integers(1, 70), batch=st.sampled_from([[], [2], [3, 1]]),
       uint8=st.booleans(), seed=st.integers(0, 2**31 - 1))
def test_matmul_with_the_exact_lut_equals_matmul_integer(m, k, n, batch, uint8, seed):
    rng = np.random.default_rng(seed)
    a = (rng.integers(0, 256, (*batch, m, k), dtype=np.uint8) if uint8
         else rng.integers(-128, 128, (*batch, m, k), dtype=np.int8))
    b = rng.integers(-128, 128, (k, n), dtype=np.int8)
    assert_all_variants_equal("ApproxMatMulInteger", a, b, 128 if uint8 else None, {})


@pytest.mark.parametrize("constant", [("w",), ("lut",), ("w", "lut")])
def test_initializer_weights_and_lut_give_the_same_result(constant):
    """Constant inputs take the cached paths (LUT analysed at session creation, weights packed
    once); two runs with different activations must both match the standard op."""
    rng = np.random.default_rng(5)
    w = rng.integers(-128, 128, (24, 8, 3, 3), dtype=np.int8)
    model, feeds = integer_op_model("ApproxConvInteger", np.zeros((2, 8, 9, 9), np.uint8), w, 128, None,
                                    constant=constant, lut=EXACT, pads=[1, 1, 1, 1])
    for variant, sess in sessions(model).items():
        for _ in range(2):
            x = rng.integers(0, 256, (2, 8, 9, 9), dtype=np.uint8)
            run_feeds = {**feeds, "x": x}
            if "lut" not in constant:
                run_feeds["lut"] = EXACT
            if "w" not in constant:
                run_feeds["w"] = w
            (got,) = sess.run(None, run_feeds)
            assert np.array_equal(got, standard_op("ConvInteger", x, w, 128, pads=[1, 1, 1, 1])), variant
