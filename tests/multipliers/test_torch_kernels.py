"""The PyTorch twins of the oracle kernels agree with it bit for bit, and pass gradients."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import multipliers
from multipliers import oracle
from multipliers.lut import apply_mask
from multipliers.torch_kernels import ConvParams, conv_products, mask_ste, matmul_products, quantize_ste

MULTS = list(multipliers.catalog()) + ["mitchell", "drum:4"]


@pytest.mark.parametrize("mask", list(range(256)))
def test_float_masks_equal_twos_complement_masks(mask):
    x = torch.arange(-128, 128, dtype=torch.float32)
    assert np.array_equal(mask_ste(x, mask).numpy().astype(np.int64), apply_mask(np.arange(-128, 128), mask))


def test_quantize_ste_rounds_half_to_even_and_clips_gradients():
    x = torch.tensor([-130.0, -127.5, -0.5, 0.5, 1.5, 2.5, 126.6, 200.0], requires_grad=True)
    y = quantize_ste(x, -128, 127)
    assert y.tolist() == [-128, -128, 0, 0, 2, 2, 127, 127]
    y.sum().backward()
    assert x.grad.tolist() == [0, 1, 1, 1, 1, 1, 1, 0]


@pytest.mark.parametrize("low, high", [(-128, 127), (-127, 127), (0, 255)])
def test_quantize_ste_is_fake_quantization_at_scale_one(low, high):
    """Values and gradients of torch's fake quantization, half-way points and clip edges included."""
    gen = torch.Generator().manual_seed(0)
    x = torch.cat([torch.arange(-260, 260) / 2.0, torch.randn(4000, generator=gen) * 150]).requires_grad_()
    g = torch.randn(x.shape, generator=gen)
    y = quantize_ste(x, low, high)
    (got,) = torch.autograd.grad(y, x, g)
    ref = torch.fake_quantize_per_tensor_affine(x, 1.0, 0, low, high)
    (expected,) = torch.autograd.grad(ref, x, g)
    assert torch.equal(y, ref) and torch.equal(got, expected)


@settings(max_examples=30)
@given(st.sampled_from(MULTS), st.sampled_from(["auto", "lut"]), st.integers(1, 2), st.integers(1, 3),
       st.integers(1, 2), st.integers(0, 1), st.integers(0, 2**31))
def test_conv_products_equal_the_oracle(name, method, group, kernel, stride, pad, seed):
    rng = np.random.default_rng(seed)
    x = rng.integers(-128, 128, (2, 2 * group, 7, 6))
    w = rng.integers(-127, 128, (3 * group, 2, kernel, kernel))
    p = ConvParams((stride, stride), (pad, pad, pad, pad), (1, 1), group)
    mult = multipliers.get(name)
    got = conv_products(torch.tensor(x, dtype=torch.float32), torch.tensor(w, dtype=torch.float32), p, mult, method)
    expected = oracle.lut_conv(x, w, mult.lut, strides=p.strides, pads=p.pads, dilations=p.dilations, group=group)
    assert np.array_equal(got.numpy().astype(np.int64), expected)


@settings(max_examples=30)
@given(st.sampled_from(MULTS), st.sampled_from(["auto", "lut"]), st.integers(1, 300), st.integers(0, 2**31))
def test_matmul_products_equal_the_oracle(name, method, k, seed):
    rng = np.random.default_rng(seed)
    a, w = rng.integers(-128, 128, (2, 3, k)), rng.integers(-127, 128, (k, 4))
    mult = multipliers.get(name)
    got = matmul_products(torch.tensor(a, dtype=torch.float32), torch.tensor(w, dtype=torch.float32), mult, method)
    assert np.array_equal(got.numpy().astype(np.int64), oracle.lut_matmul(a, w, mult.lut))


def test_gradient_is_the_exact_products_straight_through():
    torch.manual_seed(0)
    a = torch.randint(-128, 128, (4, 16)).float().requires_grad_()
    w = torch.randint(-127, 128, (16, 3)).float()
    matmul_products(a, w, multipliers.get("mul8s_1L2L")).sum().backward()
    masked_w = torch.tensor(apply_mask(w.numpy().astype(np.int64), 0xFC), dtype=torch.float32)
    assert torch.equal(a.grad, masked_w.sum(1).expand(4, 16))  # d/da of (a & m) @ (w & m), mask passed through


@settings(max_examples=20)
@given(st.sampled_from(MULTS), st.sampled_from(["auto", "lut"]), st.integers(1, 2), st.integers(0, 2),
       st.integers(0, 2**31))
def test_lut_gradient_keeps_the_forward_products(name, method, group, pad, seed):
    rng = np.random.default_rng(seed)
    x, w = rng.integers(-128, 128, (2, 2 * group, 6, 5)), rng.integers(-127, 128, (2 * group, 2, 3, 2))
    p = ConvParams((1, 2), (pad, 0, 1, pad), (1, 1), group)
    mult = multipliers.get(name)
    got = conv_products(torch.tensor(x, dtype=torch.float32), torch.tensor(w, dtype=torch.float32), p, mult, method,
                        gradient="lut")
    expected = oracle.lut_conv(x, w, mult.lut, strides=p.strides, pads=p.pads, dilations=p.dilations, group=group)
    assert np.array_equal(got.numpy().astype(np.int64), expected)
    a, b = rng.integers(-128, 128, (3, 2, 17)), rng.integers(-127, 128, (17, 3))
    got = matmul_products(torch.tensor(a, dtype=torch.float32), torch.tensor(b, dtype=torch.float32), mult, method,
                          gradient="lut")
    assert np.array_equal(got.numpy().astype(np.int64), oracle.lut_matmul(a, b, mult.lut))


def _grads(fn, x, w, g):
    a, b = x.clone().requires_grad_(), w.clone().requires_grad_()
    fn(a, b).backward(g)
    return a.grad, b.grad


@pytest.mark.parametrize("name", ["mul8s_1L2L", "mul8s_1KVA", "mitchell"])
def test_lut_gradient_is_the_table_gradient(name):
    """grad_a = conv_input_grad(g, d_a[w]), grad_w = conv_weight_grad(d_w[a_padded], g)."""
    from torch.nn import functional as F

    from multipliers.gradients import gradient_tables

    rng = np.random.default_rng(0)
    x = torch.tensor(rng.integers(-128, 128, (2, 3, 6, 7)), dtype=torch.float32)
    w = torch.tensor(rng.integers(-127, 128, (4, 3, 3, 3)), dtype=torch.float32)
    p = ConvParams((2, 1), (1, 2, 0, 1), (1, 1), 1)
    mult = multipliers.get(name)
    tables = gradient_tables(mult, "lut")
    g = torch.randn(conv_products(x, w, p, mult).shape, generator=torch.Generator().manual_seed(1))
    ga, gw = _grads(lambda a, b: conv_products(a, b, p, mult, gradient="lut"), x, w, g)

    def table(v, t):
        return torch.tensor(t, dtype=torch.float64)[v.to(torch.int64) + 128]

    xp = F.pad(x, (2, 1, 1, 0)).double()
    ref_a, _ = _grads(lambda a, b: F.conv2d(a, table(b, tables.d_a), stride=p.strides), xp, w.double(), g.double())
    _, ref_w = _grads(lambda a, b: F.conv2d(table(a, tables.d_w), b, stride=p.strides), xp, w.double(), g.double())
    torch.testing.assert_close(ga.double(), ref_a[:, :, 1:7, 2:9], rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(gw.double(), ref_w, rtol=1e-5, atol=1e-4)


def test_lut_gradient_of_the_exact_multiplier_is_the_ste_bit_for_bit():
    rng = np.random.default_rng(2)
    x = torch.tensor(rng.integers(-128, 128, (2, 3, 5, 5)), dtype=torch.float32)
    w = torch.tensor(rng.integers(-127, 128, (2, 3, 3, 3)), dtype=torch.float32)
    p = ConvParams((1, 1), (1, 1, 1, 1), (1, 1), 1)
    g = torch.randn(2, 2, 5, 5, generator=torch.Generator().manual_seed(3))
    for mult in (None, multipliers.exact()):
        ste = _grads(lambda a, b: conv_products(a, b, p, mult, gradient="ste"), x, w, g)
        lut = _grads(lambda a, b: conv_products(a, b, p, mult, gradient="lut"), x, w, g)
        assert torch.equal(ste[0], lut[0]) and torch.equal(ste[1], lut[1])
    with pytest.raises(ValueError, match="gradient must be one of"):
        conv_products(x, w, p, None, gradient="lut2d")
