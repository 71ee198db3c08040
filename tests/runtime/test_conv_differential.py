"""axmoe.ApproxConvInteger == the numpy oracle (multipliers.oracle.lut_conv), bit for bit, for
every kernel ISA this CPU has and both paths (decomposed where the LUT allows, general LUT),
on hypothesis-drawn shapes, strides, pads (explicit and auto_pad), dilations, groups incl.
depthwise, batch sizes, 1-D and 2-D convs, both activation zero-point forms, and catalog and
non-decomposable multipliers."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from multipliers.oracle import lut_conv
from op_models import LUT_NAMES, auto_pads, integer_op_model, lut, sessions, signed


@st.composite
def conv_cases(draw):
    spatial = draw(st.sampled_from([1, 2]))
    if draw(st.booleans()):  # depthwise: one input channel per group
        group = draw(st.integers(1, 6))
        cg, mg = 1, draw(st.integers(1, 2))
    else:
        group = draw(st.sampled_from([1, 1, 2, 3]))
        cg, mg = draw(st.integers(1, 6)), draw(st.integers(1, 5))
    kernel_shape = [draw(st.integers(1, 3)) for _ in range(spatial)]
    strides = [draw(st.integers(1, 3)) for _ in range(spatial)]
    dilations = [draw(st.integers(1, 2)) for _ in range(spatial)]
    auto_pad = draw(st.sampled_from(["NOTSET", "NOTSET", "NOTSET", "SAME_UPPER", "SAME_LOWER", "VALID"]))
    pads = [draw(st.integers(0, 2)) for _ in range(2 * spatial)] if auto_pad == "NOTSET" else None
    size = []
    for i in range(spatial):
        extent = dilations[i] * (kernel_shape[i] - 1) + 1
        slack = (pads[i] + pads[i + spatial]) if pads else 0
        size.append(draw(st.integers(max(1, extent - slack), max(1, extent - slack) + 9)))
    return dict(n=draw(st.integers(1, 3)), c=cg * group, m=mg * group, group=group, size=size,
                kernel_shape=kernel_shape, strides=strides, dilations=dilations, auto_pad=auto_pad, pads=pads,
                x_form=draw(st.sampled_from(["uint8", "int8", "int8+zp"])),
                w_zp=draw(st.sampled_from(["none", "scalar", "per-channel"])),
                luts=draw(st.lists(st.sampled_from(LUT_NAMES), min_size=1, max_size=2, unique=True)),
                seed=draw(st.integers(0, 2**31 - 1)))


def check_conv(case, threads=2):
    rng = np.random.default_rng(case["seed"])
    spatial = len(case["size"])
    if case["x_form"] == "uint8":
        x, x_zp = rng.integers(0, 256, (case["n"], case["c"], *case["size"]), dtype=np.uint8), 128
    else:
        x = rng.integers(-128, 128, (case["n"], case["c"], *case["size"]), dtype=np.int8)
        x_zp = 0 if case["x_form"] == "int8+zp" else None
    w = rng.integers(-128, 128, (case["m"], case["c"] // case["group"], *case["kernel_shape"]), dtype=np.int8)
    w_zp = {"none": None, "scalar": 0, "per-channel": np.zeros(case["m"], np.int8)}[case["w_zp"]]
    attrs = dict(group=case["group"], strides=case["strides"], dilations=case["dilations"])
    if case["auto_pad"] == "NOTSET":
        attrs["pads"] = case["pads"]
        pads = case["pads"]
    else:
        attrs["auto_pad"] = case["auto_pad"]
        pads = auto_pads(case["size"], case["kernel_shape"], case["strides"], case["dilations"], case["auto_pad"])
    if spatial == 2 and rng.integers(2):
        attrs["kernel_shape"] = case["kernel_shape"]
    model, feeds = integer_op_model("ApproxConvInteger", x, w, x_zp, w_zp, **attrs)
    runs = sessions(model, threads)
    a = signed(x, x_zp)
    for name in case["luts"]:
        table = lut(name)
        want = lut_conv(a, w, table, strides=case["strides"], pads=pads, dilations=case["dilations"],
                        group=case["group"])
        for variant, sess in runs.items():
            (got,) = sess.run(None, {**feeds, "lut": table})
            assert got.dtype == np.int32 and got.shape == want.shape, (variant, name, got.shape, want.shape)
            assert np.array_equal(got, want), (variant, name, case, np.argwhere(got != want)[:5])


@settings(max_examples=60)
@given(conv_cases())
def test_conv_matches_oracle(case):
    check_conv(case)


@pytest.mark.parametrize("case", [
    # more than one 256-lane LUT panel and one 64-lane decomposed panel, batch 2
    dict(n=2, c=8, m=12, group=1, size=[20, 20], kernel_shape=[3, 3], strides=[1, 1], dilations=[1, 1],
         pads=[1, 1, 1, 1]),
    # output rows split over tasks (few panels, many filters), stride 2, 5x5
    dict(n=1, c=3, m=70, group=1, size=[17, 17], kernel_shape=[5, 5], strides=[2, 2], dilations=[1, 1],
         pads=[2, 2, 2, 2]),
    # depthwise 3x3 on 16 channels, ResNet-like 8x8
    dict(n=3, c=16, m=16, group=16, size=[8, 8], kernel_shape=[3, 3], strides=[1, 1], dilations=[1, 1],
         pads=[1, 1, 1, 1]),
    # long 1-D conv with dilation
    dict(n=2, c=5, m=9, group=1, size=[300], kernel_shape=[3], strides=[1], dilations=[3], pads=[2, 4]),
    # 1x1 conv, 130 filters (K = 64: not a multiple of the 4-k VNNI group after channel padding)
    dict(n=1, c=64, m=130, group=1, size=[3, 3], kernel_shape=[1, 1], strides=[1, 1], dilations=[1, 1],
         pads=[0, 0, 0, 0]),
], ids=["panels", "row-split", "depthwise", "1d-long", "1x1-wide"])
@pytest.mark.parametrize("x_form", ["uint8", "int8"])
def test_conv_tiling_edges(case, x_form):
    check_conv(dict(case, auto_pad="NOTSET", x_form=x_form, w_zp="none", seed=1,
                    luts=["mul8s_1KVA", "mitchell", "mul8s_1L12"]))


@pytest.mark.parametrize("threads", [1, 2])
def test_conv_thread_counts_agree(threads):
    check_conv(dict(n=1, c=16, m=16, group=1, size=[16, 16], kernel_shape=[3, 3], strides=[1, 1],
                    dilations=[1, 1], pads=[1, 1, 1, 1], auto_pad="NOTSET", x_form="uint8", w_zp="scalar",
                    seed=3, luts=["mul8s_1KV9", "drum:4"]), threads=threads)
