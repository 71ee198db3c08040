"""export.kernel_products: forward products from the C++ kernels equal the numpy oracle bit for bit,
and the float backward is the table gradient of `multipliers.gradients`."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.nn import functional as F

import multipliers
from export import kernel_products
from multipliers import oracle, torch_kernels
from multipliers.gradients import gradient_tables
from multipliers.torch_kernels import ConvParams

MULTS = list(multipliers.catalog()) + ["mitchell", "drum:4"]
SAMPLE = ["mul8s_1KV6", "mul8s_1L2L", "mul8s_1KV8", "mul8s_1KVA", "mitchell", "drum:4"]


@st.composite
def convs(draw):
    """(x, w, params) of a random 1-D or 2-D convolution with integer operands."""
    spatial = draw(st.sampled_from([1, 2]))
    group = draw(st.integers(1, 3))
    cg, mg = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    kernel = [draw(st.integers(1, 3)) for _ in range(spatial)]
    dilations = [draw(st.integers(1, 2)) for _ in range(spatial)]
    strides = [draw(st.integers(1, 3)) for _ in range(spatial)]
    pads = [draw(st.integers(0, 2)) for _ in range(2 * spatial)]
    size = [d * (k - 1) + 1 + draw(st.integers(0, 5)) for k, d in zip(kernel, dilations)]
    rng = np.random.default_rng(draw(st.integers(0, 2**31)))
    x = rng.integers(-128, 128, (draw(st.integers(1, 2)), cg * group, *size))
    w = rng.integers(-128, 128, (mg * group, cg, *kernel))
    return x, w, ConvParams(tuple(strides), tuple(pads), tuple(dilations), group)


def _float(x):
    return torch.tensor(x, dtype=torch.float32)


@settings(max_examples=60)
@given(st.sampled_from(MULTS), convs())
def test_conv_products_equal_the_oracle(name, case):
    x, w, p = case
    mult = multipliers.get(name)
    got = kernel_products.conv_products(_float(x), _float(w), p, mult)
    expected = oracle.lut_conv(x, w, mult.lut, strides=p.strides, pads=p.pads, dilations=p.dilations, group=p.group)
    assert got.dtype == torch_kernels.exact_dtype(int(np.prod(w.shape[1:])), torch_kernels.product_bound(mult))
    assert np.array_equal(got.numpy().astype(np.int64), expected)


@settings(max_examples=40)
@given(st.sampled_from(MULTS), st.integers(1, 3), st.integers(1, 700), st.integers(1, 9), st.integers(0, 2**31))
def test_matmul_products_equal_the_oracle(name, rank, k, m, seed):
    rng = np.random.default_rng(seed)
    a = rng.integers(-128, 128, tuple(rng.integers(1, 4, rank - 1)) + (k,))
    w = rng.integers(-128, 128, (k, m))
    mult = multipliers.get(name)
    got = kernel_products.matmul_products(_float(a), _float(w), mult)
    assert got.shape == a.shape[:-1] + (m,)
    assert np.array_equal(got.numpy().astype(np.int64), oracle.lut_matmul(a, w, mult.lut))


@pytest.mark.parametrize("products", [kernel_products.matmul_products, torch_kernels.matmul_products])
def test_accumulations_past_float32_are_exact(products):
    """DRUM's largest product is 20736 > 2^14: 1000 of them pass 2^24, so the result is float64."""
    mult = multipliers.get("drum:4")
    i, j = np.unravel_index(np.abs(mult.lut).argmax(), mult.lut.shape)
    a = np.full((2, 1000), i - 128)
    a[1, ::7] = 3  # and a not-all-equal row
    w = np.full((1000, 2), j - 128)
    got = products(_float(a), _float(w), mult)
    assert got.dtype == torch.float64
    assert np.array_equal(got.numpy().astype(np.int64), oracle.lut_matmul(a, w, mult.lut))


def test_exact_multiplier_and_none_are_exact_products():
    rng = np.random.default_rng(1)
    x, w = rng.integers(-128, 128, (2, 4, 6, 5)), rng.integers(-128, 128, (3, 4, 3, 3))
    p = ConvParams((1, 1), (1, 1, 1, 1), (1, 1), 1)
    exact = oracle.lut_conv(x, w, multipliers.exact().lut, strides=p.strides, pads=p.pads, dilations=p.dilations)
    for mult in (None, multipliers.exact()):
        assert np.array_equal(kernel_products.conv_products(_float(x), _float(w), p, mult).numpy(), exact)


def _conv_grads(fn, x, w, g):
    a, b = x.clone().requires_grad_(), w.clone().requires_grad_()
    fn(a, b).backward(g)
    return a.grad, b.grad


@pytest.mark.parametrize("name", SAMPLE)
@pytest.mark.parametrize("pads", [(0, 0, 0, 0), (1, 1, 1, 1), (0, 2, 1, 0)])
def test_conv_ste_gradients_equal_the_torch_kernels(name, pads):
    """"ste" is today's straight-through gradient of multipliers.torch_kernels, bit for bit."""
    rng = np.random.default_rng(2)
    x, w = _float(rng.integers(-128, 128, (2, 4, 7, 6))), _float(rng.integers(-128, 128, (6, 2, 3, 2)))
    p = ConvParams((2, 1), pads, (1, 2), 2)
    mult = multipliers.get(name)
    expected_y = torch_kernels.conv_products(x, w, p, mult)
    g = torch.randn(expected_y.shape, generator=torch.Generator().manual_seed(3))
    got = _conv_grads(lambda a, b: kernel_products.conv_products(a, b, p, mult), x, w, g)
    expected = _conv_grads(lambda a, b: torch_kernels.conv_products(a, b, p, mult), x, w, g)
    assert torch.equal(got[0], expected[0]) and torch.equal(got[1], expected[1])


@pytest.mark.parametrize("name", SAMPLE)
def test_matmul_ste_gradients_equal_the_torch_kernels(name):
    rng = np.random.default_rng(4)
    a, w = _float(rng.integers(-128, 128, (2, 3, 40))), _float(rng.integers(-128, 128, (40, 5)))
    mult = multipliers.get(name)
    g = torch.randn(2, 3, 5, generator=torch.Generator().manual_seed(5))
    got = _conv_grads(lambda x, y: kernel_products.matmul_products(x, y, mult), a, w, g)
    expected = _conv_grads(lambda x, y: torch_kernels.matmul_products(x, y, mult), a, w, g)
    assert torch.equal(got[0], expected[0]) and torch.equal(got[1], expected[1])


def _table(x, table):
    return torch.tensor(table, dtype=torch.float64)[x.to(torch.int64) + 128]


@pytest.mark.parametrize("name", ["mul8s_1L2L", "mul8s_1KVA", "mitchell", "drum:4"])
def test_conv_lut_gradient_is_the_table_gradient(name):
    """grad_a = conv_input_grad(g, d_a[w]) and grad_w = conv_weight_grad(d_w[a], g), the padded
    positions of a mapped as the activation 0; reference: autograd of float64 convolutions."""
    rng = np.random.default_rng(6)
    x, w = _float(rng.integers(-128, 128, (2, 3, 6, 7))), _float(rng.integers(-128, 128, (4, 3, 3, 3)))
    p = ConvParams((1, 2), (1, 0, 2, 1), (1, 1), 1)
    mult = multipliers.get(name)
    tables = gradient_tables(mult, "lut")
    g = torch.randn(kernel_products.conv_products(x, w, p, mult).shape, generator=torch.Generator().manual_seed(7))
    ga, gw = _conv_grads(lambda a, b: kernel_products.conv_products(a, b, p, mult, gradient="lut"), x, w, g)
    xp = F.pad(x, (p.pads[1], p.pads[3], p.pads[0], p.pads[2]))  # ConvInteger pads with a = 0
    a = xp.double().requires_grad_()
    F.conv2d(a, _table(w, tables.d_a), stride=p.strides).backward(g.double())
    b = w.double().requires_grad_()
    F.conv2d(_table(xp, tables.d_w), b, stride=p.strides).backward(g.double())
    ref_a = a.grad[:, :, p.pads[0]:xp.shape[2] - p.pads[2], p.pads[1]:xp.shape[3] - p.pads[3]]
    torch.testing.assert_close(ga.double(), ref_a, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(gw.double(), b.grad, rtol=1e-5, atol=1e-4)
    exact_w = _conv_grads(lambda u, v: F.conv2d(u, v, stride=p.strides), xp.double(), w.double(), g.double())[1]
    assert not torch.allclose(gw.double(), exact_w)  # not the straight-through gradient


def test_matmul_lut_gradient_is_the_table_gradient():
    rng = np.random.default_rng(8)
    a, w = _float(rng.integers(-128, 128, (2, 3, 30))), _float(rng.integers(-128, 128, (30, 4)))
    mult = multipliers.get("mitchell")
    tables = gradient_tables(mult, "lut")
    g = torch.randn(2, 3, 4, generator=torch.Generator().manual_seed(9))
    ga, gw = _conv_grads(lambda x, y: kernel_products.matmul_products(x, y, mult, gradient="lut"), a, w, g)
    torch.testing.assert_close(ga.double(), g.double() @ _table(w, tables.d_a).t(), rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(gw.double(), _table(a, tables.d_w).reshape(-1, 30).t() @ g.double().reshape(-1, 4),
                               rtol=1e-5, atol=1e-4)


def test_lut_gradient_of_the_exact_multiplier_is_the_ste_bit_for_bit():
    rng = np.random.default_rng(10)
    x, w = _float(rng.integers(-128, 128, (2, 4, 6, 6))), _float(rng.integers(-128, 128, (4, 4, 3, 3)))
    p = ConvParams((1, 1), (1, 0, 1, 2), (1, 1), 1)
    g = torch.randn(kernel_products.conv_products(x, w, p, None).shape, generator=torch.Generator().manual_seed(11))
    for mult in (None, multipliers.exact()):
        ste = _conv_grads(lambda a, b: kernel_products.conv_products(a, b, p, mult, gradient="ste"), x, w, g)
        lut = _conv_grads(lambda a, b: kernel_products.conv_products(a, b, p, mult, gradient="lut"), x, w, g)
        assert torch.equal(ste[0], lut[0]) and torch.equal(ste[1], lut[1])
        plain = _conv_grads(lambda a, b: F.conv2d(F.pad(a, (0, 2, 1, 1)), b), x, w, g)  # the exact product's
        assert torch.equal(lut[0], plain[0]) and torch.equal(lut[1], plain[1])


def test_bad_inputs_fail_with_one_line_errors():
    p = ConvParams((1, 1), (0, 0, 0, 0), (1, 1), 1)
    x, w = torch.zeros(1, 2, 3, 3), torch.zeros(2, 2, 1, 1)
    with pytest.raises(ValueError, match="CPU tensors"):
        kernel_products.conv_products(x.to("meta"), w.to("meta"), p, None)
    with pytest.raises(ValueError, match=r"\[-128, 127\]"):
        kernel_products.conv_products(x + 128, w, p, None)
    with pytest.raises(ValueError, match="gradient must be one of"):
        kernel_products.matmul_products(torch.zeros(2, 3), torch.zeros(3, 2), None, gradient="exact")
    with pytest.raises(ValueError, match="1-D or 2-D"):
        kernel_products.conv_products(torch.zeros(1, 2, 3, 3, 3), torch.zeros(2, 2, 1, 1, 1),
                                      ConvParams((1,) * 3, (0,) * 6, (1,) * 3), None)
