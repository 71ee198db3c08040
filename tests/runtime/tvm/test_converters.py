"""The TVM lowering of axmoe.ApproxConvInteger / axmoe.ApproxMatMulInteger == the numpy oracle
(multipliers.oracle), bit for bit: one-node models with constant weights and LUT, hypothesis-
drawn shapes, strides, pads, dilations, groups and 1-D convs, both kernel forms (`auto`: the
exact decomposition as dot products, VNNI here; `lut`: table lookups) and a non-decomposable
multiplier. Few examples: every one is a compile."""

import numpy as np
import onnx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import runtime.tvm
from multipliers.oracle import lut_conv, lut_matmul
from axmoe_testing import run_tvm
from op_models import integer_op_model, lut

LUTS = ["mul8s_1KVA", "mul8s_1L2J", "mitchell"]


@st.composite
def conv_cases(draw):
    spatial = draw(st.sampled_from([1, 2, 2]))
    group = draw(st.sampled_from([1, 1, 2, 3]))
    cg, mg = draw(st.integers(1, 5)), draw(st.integers(1, 20))
    kernel = [draw(st.integers(1, 3)) for _ in range(spatial)]
    strides = [draw(st.integers(1, 3)) for _ in range(spatial)]
    dilations = [draw(st.integers(1, 2)) for _ in range(spatial)]
    pads = [draw(st.integers(0, 2)) for _ in range(2 * spatial)]
    size = [draw(st.integers(max(1, d * (k - 1) + 1 - p0 - p1), 12))
            for d, k, p0, p1 in zip(dilations, kernel, pads[:spatial], pads[spatial:])]
    return dict(n=draw(st.integers(1, 2)), c=cg * group, m=mg * group, group=group, size=size, kernel=kernel,
                strides=strides, dilations=dilations, pads=pads, lut=draw(st.sampled_from(LUTS)),
                kernel_form=draw(st.sampled_from(["auto", "lut"])), seed=draw(st.integers(0, 2**31 - 1)))


@settings(max_examples=10)
@given(case=conv_cases())
def test_conv_matches_oracle(case, tmp_path_factory):
    rng = np.random.default_rng(case["seed"])
    x = rng.integers(0, 256, (case["n"], case["c"], *case["size"]), dtype=np.uint8)
    w = rng.integers(-127, 128, (case["m"], case["c"] // case["group"], *case["kernel"]), dtype=np.int8)
    table = lut(case["lut"])
    model, feeds = integer_op_model("ApproxConvInteger", x, w, np.uint8(128), None, constant=("w", "x_zp", "lut"),
                                    lut=table,
                                    group=case["group"], strides=case["strides"], dilations=case["dilations"],
                                    pads=case["pads"])
    got = run_tvm(model, tmp_path_factory.mktemp("conv"), feeds["x"], case["kernel_form"])
    want = lut_conv(x.astype(np.int64) - 128, w, table, strides=case["strides"], pads=case["pads"],
                    dilations=case["dilations"], group=case["group"])
    assert got.dtype == np.int32 and np.array_equal(got, want), case


@settings(max_examples=8)
@given(rows=st.integers(1, 19), k=st.integers(1, 70), n=st.integers(1, 40), lead=st.sampled_from([(), (2,)]),
       name=st.sampled_from(LUTS), kernel_form=st.sampled_from(["auto", "lut"]), seed=st.integers(0, 2**31 - 1))
def test_matmul_matches_oracle(rows, k, n, lead, name, kernel_form, seed, tmp_path_factory):
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 256, (*lead, rows, k), dtype=np.uint8)
    b = rng.integers(-127, 128, (k, n), dtype=np.int8)
    table = lut(name)
    model, feeds = integer_op_model("ApproxMatMulInteger", a, b, np.uint8(128), None, constant=("w", "x_zp", "lut"),
                                    lut=table)
    got = run_tvm(model, tmp_path_factory.mktemp("matmul"), feeds["x"], kernel_form)
    assert np.array_equal(got, lut_matmul(a.astype(np.int64) - 128, b, table))


def test_unsupported_input_is_one_clear_error():
    from runtime.tvm.converters import ConversionError

    x = np.zeros((1, 4, 5, 5), np.uint8)
    w = np.zeros((2, 4, 3, 3), np.int8)
    model, _ = integer_op_model("ApproxConvInteger", x, w, np.uint8(3), None, constant=("w", "x_zp", "lut"),
                                lut=lut("mul8s_1KVA"))
    with pytest.raises(ConversionError, match="zero point 128"):
        runtime.tvm.from_onnx(onnx.load_model_from_string(model))


def test_kernel_form_is_the_imports_config():
    # the importer hands its LoweringConfig to the axmoe converters, one import at a time: a
    # decomposable LUT takes the dot product (with its compensation term) under "auto" and the
    # table under "lut", whichever import came before
    from runtime.tvm.config import LoweringConfig

    x = np.zeros((1, 4, 5, 5), np.uint8)
    w = np.ones((2, 4, 3, 3), np.int8)
    model, _ = integer_op_model("ApproxConvInteger", x, w, np.uint8(128), None, constant=("w", "x_zp", "lut"),
                                lut=lut("mul8s_1L2J"))
    proto = onnx.load_model_from_string(model)

    def functions(kernel):
        return {gv.name_hint for gv in runtime.tvm.from_onnx(proto, kernel=kernel).functions}

    for kernel in ("lut", "auto", "lut"):
        assert ("axmoe_compensation" in functions(kernel)) == (kernel == "auto"), kernel
    with pytest.raises(ValueError, match="kernel must be 'auto' or 'lut', got 'dot'"):
        runtime.tvm.from_onnx(proto, kernel="dot")
    with pytest.raises(AttributeError):
        LoweringConfig().kernel = "lut"  # frozen: nothing changes a config during an import
