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
