"""The numpy oracle against naive loops, torch, and its own decomposed twin."""

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import multipliers
from multipliers import oracle

CATALOG = list(multipliers.catalog())
MULTS = CATALOG + ["mitchell", "drum:4"]


def naive_conv(x, w, lut, strides, pads, dilations, group):
    """Direct definition with Python loops (tiny shapes only): padded taps read a = 0."""
    spatial = x.ndim - 2
    if spatial == 1:
        x, w = x[:, :, None, :], w[:, :, None, :]
        strides, dilations, pads = (1,) + tuple(strides), (1,) + tuple(dilations), (0, pads[0], 0, pads[1])
    n, c, h, wd = x.shape
    m, cg, kh, kw = w.shape
    mg = m // group
    oh = (h + pads[0] + pads[2] - dilations[0] * (kh - 1) - 1) // strides[0] + 1
    ow = (wd + pads[1] + pads[3] - dilations[1] * (kw - 1) - 1) // strides[1] + 1
    out = np.zeros((n, m, oh, ow), dtype=np.int64)
    for b in range(n):
        for o in range(m):
            g = o // mg
            for i in range(oh):
                for j in range(ow):
                    acc = 0
                    for ci in range(cg):
                        for r in range(kh):
                            for s in range(kw):
                                y = i * strides[0] - pads[0] + r * dilations[0]
                                xx = j * strides[1] - pads[1] + s * dilations[1]
                                inside = 0 <= y < h and 0 <= xx < wd
                                a = int(x[b, g * cg + ci, y, xx]) if inside else 0
                                acc += int(lut[a + 128, int(w[o, ci, r, s]) + 128])
                    out[b, o, i, j] = acc
    return out[:, :, 0, :] if spatial == 1 else out


@st.composite
def conv_cases(draw, max_spatial=6):
    spatial = draw(st.sampled_from([1, 2]))
    group = draw(st.sampled_from([1, 2, 3]))
    cg = draw(st.integers(1, 3))
    mg = draw(st.integers(1, 3))
    kernel = [draw(st.integers(1, 3)) for _ in range(spatial)]
    dil = [draw(st.integers(1, 2)) for _ in range(spatial)]
    strides = [draw(st.integers(1, 3)) for _ in range(spatial)]
    pads = [draw(st.integers(0, 2)) for _ in range(2 * spatial)]
    size = [draw(st.integers(dil[i] * (kernel[i] - 1) + 1, max_spatial + 2)) for i in range(spatial)]
    n = draw(st.integers(1, 2))
    seed = draw(st.integers(0, 2**31))
    rng = np.random.default_rng(seed)
    x = rng.integers(-128, 128, (n, group * cg, *size))
    w = rng.integers(-128, 128, (group * mg, cg, *kernel))
    return x, w, dict(strides=strides, pads=pads, dilations=dil, group=group)


@given(conv_cases(), st.sampled_from(MULTS))
def test_lut_conv_matches_naive_loops(case, name):
    x, w, attrs = case
    lut = multipliers.get(name).lut
    expected = naive_conv(x, w, lut, attrs["strides"], attrs["pads"], attrs["dilations"], attrs["group"])
    assert np.array_equal(oracle.lut_conv(x, w, lut, **attrs), expected)


@given(conv_cases(max_spatial=10), st.sampled_from(CATALOG))
def test_decomposed_conv_equals_lut_conv(case, name):
    x, w, attrs = case
    m = multipliers.get(name)
    assert np.array_equal(oracle.decomposed_conv(x, w, m.decomposition, **attrs),
                          oracle.lut_conv(x, w, m.lut, **attrs))


@given(conv_cases(max_spatial=10))
def test_exact_lut_conv_equals_torch(case):
    x, w, attrs = case
    spatial = x.ndim - 2
    pads = attrs["pads"]
    torch_pad = [p for i in reversed(range(spatial)) for p in (pads[i], pads[i + spatial])]
    xt = torch.nn.functional.pad(torch.tensor(x, dtype=torch.float64), torch_pad)
    conv = torch.nn.functional.conv1d if spatial == 1 else torch.nn.functional.conv2d
    expected = conv(xt, torch.tensor(w, dtype=torch.float64), stride=attrs["strides"],
                    dilation=attrs["dilations"], groups=attrs["group"]).numpy()
    assert np.array_equal(oracle.lut_conv(x, w, multipliers.exact_lut(), **attrs), expected)


@st.composite
def matmul_cases(draw):
    m, k, n = draw(st.integers(1, 5)), draw(st.integers(1, 40)), draw(st.integers(1, 5))
    batch_a = draw(st.sampled_from([(), (2,), (1, 3), (2, 1)]))
    batch_b = draw(st.sampled_from([(), (2,), (3,), (1,)]))
    try:
        np.broadcast_shapes(batch_a, batch_b)
    except ValueError:
        batch_b = ()
    rng = np.random.default_rng(draw(st.integers(0, 2**31)))
    return rng.integers(-128, 128, batch_a + (m, k)), rng.integers(-128, 128, batch_b + (k, n))


@given(matmul_cases(), st.sampled_from(MULTS))
def test_lut_matmul_matches_naive_sum(case, name):
    a, b = case
    lut = multipliers.get(name).lut
    out = oracle.lut_matmul(a, b, lut)
    ab, bb = np.broadcast_arrays(a[..., :, :, None], b[..., None, :, :])
    assert np.array_equal(out, lut[ab + 128, bb + 128].sum(axis=-2))


@given(matmul_cases(), st.sampled_from(CATALOG))
def test_decomposed_matmul_equals_lut_matmul(case, name):
    a, b = case
    m = multipliers.get(name)
    assert np.array_equal(oracle.decomposed_matmul(a, b, m.decomposition), oracle.lut_matmul(a, b, m.lut))


def test_exact_matmul_equals_numpy_including_vectors():
    rng = np.random.default_rng(1)
    a, b = rng.integers(-128, 128, (3, 7)), rng.integers(-128, 128, (7,))
    assert np.array_equal(oracle.lut_matmul(a, b, multipliers.exact_lut()), a @ b)
    assert np.array_equal(oracle.lut_matmul(b, a.T, multipliers.exact_lut()), b @ a.T)


def test_padding_goes_through_the_multiplier():
    """ConvInteger pads with the zero point, i.e. a = 0: a LUT with lut(0, b) != 0 sees it."""
    lut = multipliers.exact_lut().astype(np.int64)
    lut[128, :] = 1  # mul(0, b) = 1
    x = np.zeros((1, 1, 1, 1), dtype=np.int64)
    w = np.ones((1, 1, 3, 3), dtype=np.int64)
    out = oracle.lut_conv(x, w, multipliers.validate_lut(lut), pads=(1, 1, 1, 1))
    assert out.item() == 9


def test_accumulator_wraps_like_int32():
    lut = np.full((256, 256), 16384, dtype=np.int32)
    a = np.zeros((1, 1 << 17), dtype=np.int64)
    out = oracle.lut_matmul(a, np.zeros(((1 << 17), 1), dtype=np.int64), lut)
    assert out.item() == np.int32(np.int64(16384 << 17) - (1 << 32))


@pytest.mark.parametrize("bad, message", [
    (dict(x=np.full((1, 1, 3, 3), 200)), "signed 8-bit"),
    (dict(x=np.zeros((1, 1, 3, 3), np.float32)), "integers"),
    (dict(group=2), "group"),
    (dict(w=np.zeros((1, 1, 5, 5), np.int64)), "does not fit"),
])
def test_conv_input_errors(bad, message):
    args = dict(x=np.zeros((1, 1, 3, 3), np.int64), w=np.zeros((1, 1, 3, 3), np.int64), group=1)
    args.update(bad)
    with pytest.raises((ValueError, TypeError), match=message):
        oracle.lut_conv(args["x"], args["w"], multipliers.exact_lut(), group=args["group"])


def test_decomposed_refuses_non_decomposable():
    with pytest.raises(ValueError, match="no exact decomposition"):
        oracle.decomposed_matmul(np.zeros((1, 1), np.int8), np.zeros((1, 1), np.int8),
                                  multipliers.get("mitchell").decomposition)


def test_empty_batches():
    """An expert no row is routed to sees a batch of 0 rows."""
    lut = multipliers.get("mul8s_1KVA").lut
    out = oracle.lut_conv(np.zeros((0, 2, 5, 5), np.int64), np.ones((3, 2, 3, 3), np.int64), lut, pads=(1, 1, 1, 1))
    assert out.shape == (0, 3, 5, 5)
    assert oracle.lut_matmul(np.zeros((0, 4), np.int64), np.ones((4, 2), np.int64), lut).shape == (0, 2)
