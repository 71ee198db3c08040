"""Bad inputs to the axmoe integer ops come back as onnxruntime errors whose message names the
problem (dtype, zero point, shapes), never a crash or an out-of-bounds read (DESIGN
invariant 5); bad attributes fail at session creation, bad kernel settings (an explicit
KernelConfig, the environment override, or the raw session config entries) in one line
before that."""

import numpy as np
import onnxruntime as ort
import pytest

import multipliers
import runtime.ort
from multipliers.oracle import lut_conv
from op_models import integer_op_model

EXACT = multipliers.exact().lut
ORT_ERRORS = (ort.capi.onnxruntime_pybind11_state.InvalidArgument, ort.capi.onnxruntime_pybind11_state.Fail,
              ort.capi.onnxruntime_pybind11_state.RuntimeException)


def run(op, x, w, x_zp=None, w_zp=None, lut=EXACT, kernel=None, **attrs):
    model, feeds = integer_op_model(op, x, w, x_zp, w_zp, lut=lut, **attrs)
    return runtime.ort.session(model, threads=1, kernel=kernel).run(None, {**feeds, "lut": lut})[0]


U8 = np.zeros((1, 4, 6, 6), np.uint8)
S8 = np.zeros((1, 4, 6, 6), np.int8)
W = np.zeros((2, 4, 3, 3), np.int8)


@pytest.mark.parametrize("args, attrs, message", [
    ((U8.astype(np.float32), W, None), {}, r"x must be uint8 .* got float with shape \[1, 4, 6, 6\]"),
    ((U8, W, None), {}, "uint8 without x_zero_point"),
    ((U8, W, 127), {}, "x_zero_point must be 128"),
    ((S8, W, 3), {}, "x_zero_point must be 0"),
    ((U8, W, np.array([128, 128], np.uint8)), {}, r"x_zero_point must be a scalar, got shape \[2\]"),
    ((U8, W.astype(np.uint8), 128), {}, r"w must be int8 .* got uint8 with shape \[2, 4, 3, 3\]"),
    ((U8, W, 128, 1), {}, "w_zero_point must be 0"),
    ((U8, W, 128, np.zeros(3, np.int8)), {}, r"w_zero_point must be a scalar or have shape \[2\], got shape \[3\]"),
    ((np.zeros((1, 4, 2, 6, 6), np.uint8), W, 128), {}, r"x \[1, 4, 2, 6, 6\] and w \[2, 4, 3, 3\]"),
    ((U8, np.zeros((2, 3, 3, 3), np.int8), 128), {}, r"group=1 does not fit x \[1, 4, 6, 6\] and w \[2, 3, 3, 3\]"),
    ((U8, np.zeros((3, 2, 3, 3), np.int8), 128), dict(group=2), r"group=2 does not fit"),
    ((U8, np.zeros((2, 4, 7, 7), np.int8), 128), {}, r"kernel \[2, 4, 7, 7\] .* does not fit input \[1, 4, 6, 6\]"),
    ((U8, W, 128), dict(kernel_shape=[2, 2]), r"kernel_shape \[2, 2\] does not match w \[2, 4, 3, 3\]"),
    ((U8, W, 128), dict(strides=[1, 1, 1]), "strides, dilations and kernel_shape need 2 values"),
    ((U8, W, 128), dict(lut=np.zeros((16, 16), np.int32)),
     r"LUT .* int32 with shape \[256, 256\], got int32 with shape \[16, 16\]"),
    ((U8, W, 128), dict(lut=np.zeros((256, 256), np.uint8)), r"LUT .* got uint8"),
], ids=["x-float", "u8-no-zp", "u8-zp-127", "s8-zp-3", "zp-vector", "w-uint8", "w-zp-1", "w-zp-shape", "rank-5",
        "channels", "group", "kernel-too-big", "kernel-shape-attr", "strides-length", "lut-shape", "lut-dtype"])
def test_conv_errors(args, attrs, message):
    attrs = dict(attrs)
    lut = attrs.pop("lut", EXACT)
    with pytest.raises(ORT_ERRORS, match=message):
        run("ApproxConvInteger", *args, lut=lut, **attrs)


A = np.zeros((2, 5, 7), np.uint8)
B = np.zeros((7, 3), np.int8)


@pytest.mark.parametrize("args, message", [
    ((A, np.zeros((6, 3), np.int8), 128), r"A \[2, 5, 7\] and B \[6, 3\] do not align"),
    ((A, np.zeros((3, 7, 3), np.int8), 128), r"batch dims of A \[2, 5, 7\] and B \[3, 7, 3\] do not broadcast"),
    ((A, B.astype(np.uint8), 128), "b must be int8"),
    ((A, B, np.full(4, 128, np.uint8)), r"a_zero_point must be a scalar or have shape \[5\], got shape \[4\]"),
    ((A, B, np.array([128, 128, 128, 128, 0], np.uint8)), "a_zero_point must be 128"),
    ((A, B, 128, np.array([0, 0, 1], np.int8)), "b_zero_point must be 0"),
    ((np.zeros((), np.int8), B, None), "at least 1 dimension"),
], ids=["k-mismatch", "batch", "b-uint8", "zp-length", "zp-per-row-value", "b-zp", "scalar-a"])
def test_matmul_errors(args, message):
    with pytest.raises(ORT_ERRORS, match=message):
        run("ApproxMatMulInteger", *args)


@pytest.mark.parametrize("attrs, message", [
    (dict(strides=[0, 1]), "strides must be >= 1"),
    (dict(dilations=[1, -1]), "dilations must be >= 1"),
    (dict(pads=[0, -1, 0, 0]), "pads must be >= 0"),
    (dict(auto_pad="SAME"), "auto_pad must be"),
])
def test_bad_attributes_fail_at_session_creation(attrs, message):
    model, _ = integer_op_model("ApproxConvInteger", U8, W, 128, **attrs)
    with pytest.raises(ORT_ERRORS, match=message):
        runtime.ort.session(model)


AVAILABLE = rf" is not available on this CPU/build \(available: auto, {', '.join(runtime.ort.kernel_variants())}\)$"
NOT_A_PATH = "=fastest is not one of auto, lut, decomposed$"


@pytest.mark.parametrize("setting, message", [
    (dict(isa="avx9000"), "^isa=avx9000" + AVAILABLE),
    (dict(path="fastest"), "^path" + NOT_A_PATH),
])
def test_bad_kernel_config_is_a_one_line_error(setting, message):
    with pytest.raises(ValueError, match=message):
        runtime.ort.KernelConfig(**setting)


@pytest.mark.parametrize("variable, value, message", [
    ("AXMOE_KERNEL", "avx9000", "^AXMOE_KERNEL=avx9000" + AVAILABLE),
    ("AXMOE_PATH", "fastest", "^AXMOE_PATH" + NOT_A_PATH),
])
def test_bad_environment_override_fails_at_session_creation(monkeypatch, variable, value, message):
    model, _ = integer_op_model("ApproxConvInteger", U8, W, 128)
    monkeypatch.setenv(variable, value)
    with pytest.raises(ValueError, match=message):
        runtime.ort.session(model)
    runtime.ort.session(model, kernel=runtime.ort.KernelConfig())  # an explicit choice never reads it


@pytest.mark.parametrize("key, value, message", [
    (runtime.ort.KERNEL_CONFIG_KEY, "avx9000", "axmoe.kernel=avx9000" + AVAILABLE),
    (runtime.ort.PATH_CONFIG_KEY, "fastest", "axmoe.path" + NOT_A_PATH),
])
def test_bad_session_config_entries_fail_when_the_library_is_registered(key, value, message):
    options = ort.SessionOptions()
    options.add_session_config_entry(key, value)
    with pytest.raises(ORT_ERRORS, match=message):
        options.register_custom_ops_library(str(runtime.ort.library_path()))


def test_forcing_the_decomposed_path_on_a_plain_table_is_an_error():
    model, feeds = integer_op_model("ApproxConvInteger", U8, W, 128)
    sess = runtime.ort.session(model, kernel=runtime.ort.KernelConfig(path="decomposed"))
    sess.run(None, {**feeds, "lut": multipliers.get("mul8s_1KV9").lut})
    with pytest.raises(ORT_ERRORS, match="axmoe.path=decomposed, but this LUT cannot take the decomposed path .*"
                                         "not bilinear"):
        sess.run(None, {**feeds, "lut": multipliers.get("mitchell").lut})


def test_the_environment_chooses_the_kernels_when_the_caller_does_not(monkeypatch):
    model, feeds = integer_op_model("ApproxConvInteger", U8, W, 128)
    feeds["lut"] = multipliers.get("mitchell").lut
    monkeypatch.setenv("AXMOE_KERNEL", "scalar")
    monkeypatch.setenv("AXMOE_PATH", "decomposed")
    assert runtime.ort.KernelConfig.from_environment() == runtime.ort.KernelConfig("scalar", "decomposed")
    with pytest.raises(ORT_ERRORS, match="axmoe.path=decomposed, but this LUT cannot take the decomposed path"):
        runtime.ort.session(model).run(None, feeds)
    explicit = runtime.ort.session(model, kernel=runtime.ort.KernelConfig(path="lut")).run(None, feeds)[0]
    assert np.array_equal(explicit, lut_conv(U8.astype(np.int64) - 128, W, feeds["lut"]))
    monkeypatch.setenv("AXMOE_PATH", "")
    assert runtime.ort.KernelConfig.from_environment() == runtime.ort.KernelConfig("scalar", "auto")


def test_empty_tensors_give_empty_outputs():
    assert run("ApproxConvInteger", np.zeros((0, 4, 6, 6), np.uint8), W, 128).shape == (0, 2, 4, 4)
    assert run("ApproxConvInteger", U8, np.zeros((0, 4, 3, 3), np.int8), 128).shape == (1, 0, 4, 4)
    assert run("ApproxMatMulInteger", np.zeros((0, 7), np.uint8), B, 128).shape == (0, 3)
    assert run("ApproxMatMulInteger", np.zeros((2, 5, 7), np.uint8), np.zeros((7, 0), np.int8), 128).shape == (2, 5, 0)
    y = run("ApproxMatMulInteger", np.zeros((3, 0), np.uint8), np.zeros((0, 4), np.int8), 128,
            lut=np.full((256, 256), 9, np.int32))
    assert y.shape == (3, 4) and not y.any()  # K = 0: empty sums


def test_lut_entries_beyond_int16_use_the_scalar_table_and_stay_exact():
    rng = np.random.default_rng(0)
    table = rng.integers(-2**31, 2**31, (256, 256), dtype=np.int64).astype(np.int32)
    x = rng.integers(0, 256, (1, 4, 6, 6), dtype=np.uint8)
    w = rng.integers(-128, 128, (2, 4, 3, 3), dtype=np.int8)
    for isa in runtime.ort.kernel_variants():
        got = run("ApproxConvInteger", x, w, 128, lut=table, kernel=runtime.ort.KernelConfig(isa=isa))
        assert np.array_equal(got, lut_conv(x.astype(np.int64) - 128, w, table)), isa
