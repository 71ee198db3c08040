"""The emulation's linear compensation term equals a brute-force numpy computation of
    acc = sum LUT products + floor((g_o * S + 2^(F-1)) / 2^F),  S = sum of a over the receptive field
(bit for bit), and it is a constant of the backward pass."""

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

import multipliers
from export.emulation import QDQEmulation
from modelfile.ops import LINEAR_FRACTION_BITS
from multipliers import oracle
from multipliers.torch_kernels import ConvParams

F_BITS = LINEAR_FRACTION_BITS


def _graph(m: int, c: int, group: int, k: int, d_in: int, d_out: int) -> onnx.ModelProto:
    """A float graph with a Conv "conv" and a MatMul "mm": only their names and types matter here."""
    w = numpy_helper.from_array(np.zeros((m, c // group, k, k), np.float32), "w")
    w2 = numpy_helper.from_array(np.zeros((d_in, d_out), np.float32), "w2")
    nodes = [helper.make_node("Conv", ["x", "w"], ["y"], name="conv", group=group),
             helper.make_node("Flatten", ["y"], ["f"], name="flat"),
             helper.make_node("MatMul", ["f", "w2"], ["out"], name="mm")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, None)],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, None)], [w, w2])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=10)


def _term(g: np.ndarray, s: np.ndarray) -> np.ndarray:
    """floor((g * S + 2^(F-1)) / 2^F) with Python integers (no overflow, exact floor)."""
    flat = [(int(gv) * int(sv) + (1 << (F_BITS - 1))) // (1 << F_BITS) for gv, sv in zip(g.ravel(), s.ravel())]
    return np.array(flat, dtype=np.int64).reshape(s.shape)


def _conv_sums(a, m, group, k, stride, pad, dilation):
    """S[n, o, y, x] by loops over each output's receptive field (in its group), padding adding 0."""
    n, c, h, w = a.shape
    cg, mg = c // group, m // group
    oh = (h + 2 * pad - dilation * (k - 1) - 1) // stride + 1
    ow = (w + 2 * pad - dilation * (k - 1) - 1) // stride + 1
    s = np.zeros((n, m, oh, ow), np.int64)
    for b in range(n):
        for o in range(m):
            chans = range((o // mg) * cg, (o // mg + 1) * cg)
            for y in range(oh):
                for x in range(ow):
                    total = 0
                    for ch in chans:
                        for ky in range(k):
                            for kx in range(k):
                                iy, ix = y * stride - pad + ky * dilation, x * stride - pad + kx * dilation
                                if 0 <= iy < h and 0 <= ix < w:
                                    total += int(a[b, ch, iy, ix])
                    s[b, o, y, x] = total
    return s


CASES = {  # m, c, group, k, stride, pad, dilation
    "dense_pad": (6, 4, 1, 3, 1, 1, 1),
    "grouped_stride": (6, 4, 2, 3, 2, 1, 1),
    "depthwise_dilated": (4, 4, 4, 3, 1, 2, 2),
}


@pytest.mark.parametrize("mult_name", [None, "mul8s_1L2L", "mitchell"])  # exact, decomposed, LUT-only
@pytest.mark.parametrize("case", CASES)
def test_conv_linear_term_equals_brute_force(case, mult_name):
    m, c, group, k, stride, pad, dilation = CASES[case]
    rng = np.random.default_rng(7)
    a = rng.integers(-128, 128, (2, c, 7, 6))
    w = rng.integers(-127, 128, (m, c // group, k, k))
    g = rng.integers(-(1 << 22), 1 << 22, m).astype(np.int64)  # negative g * S: floor, not truncation
    mults = {"conv": multipliers.get(mult_name)} if mult_name else None
    em = QDQEmulation(_graph(m, c, group, k, 4, 3), multipliers=mults, linear_terms={"conv": g})
    params = ConvParams((stride, stride), (pad, pad, pad, pad), (dilation, dilation), group)
    got = em.conv_products("conv", torch.tensor(a, dtype=torch.float32), torch.tensor(w, dtype=torch.float32), params)
    lut = (multipliers.get(mult_name) if mult_name else multipliers.get("mul8s_1KV6")).lut
    products = oracle.lut_conv(a, w, lut, strides=(stride, stride), pads=(pad,) * 4, dilations=(dilation,) * 2,
                               group=group)
    sums = _conv_sums(a, m, group, k, stride, pad, dilation)
    want = products.astype(np.int64) + _term(np.broadcast_to(g[None, :, None, None], sums.shape), sums)
    assert got.dtype == torch.float64
    np.testing.assert_array_equal(got.numpy().astype(np.int64), want)


@pytest.mark.parametrize("mult_name", [None, "mul8s_1KVA"])
def test_matmul_linear_term_equals_brute_force(mult_name):
    rng = np.random.default_rng(3)
    a = rng.integers(-128, 128, (5, 9))
    w = rng.integers(-127, 128, (9, 4))
    g = rng.integers(-(1 << 24), 1 << 24, 4).astype(np.int64)
    mults = {"mm": multipliers.get(mult_name)} if mult_name else None
    em = QDQEmulation(_graph(2, 2, 1, 1, 9, 4), multipliers=mults, linear_terms={"mm": g})
    got = em.matmul_products("mm", torch.tensor(a, dtype=torch.float32), torch.tensor(w, dtype=torch.float32))
    lut = (multipliers.get(mult_name) if mult_name else multipliers.get("mul8s_1KV6")).lut
    sums = np.broadcast_to(a.sum(axis=1, keepdims=True), (5, 4))
    want = oracle.lut_matmul(a, w, lut).astype(np.int64) + _term(np.broadcast_to(g, (5, 4)), sums)
    np.testing.assert_array_equal(got.numpy().astype(np.int64), want)


def test_linear_term_is_a_constant_of_the_backward_pass():
    rng = np.random.default_rng(1)
    a = torch.tensor(rng.integers(-128, 128, (2, 4, 5, 5)), dtype=torch.float32, requires_grad=True)
    w = torch.tensor(rng.integers(-127, 128, (6, 4, 3, 3)), dtype=torch.float32, requires_grad=True)
    params = ConvParams((1, 1), (1, 1, 1, 1), (1, 1), 1)
    plain = QDQEmulation(_graph(6, 4, 1, 3, 4, 3))
    comp = QDQEmulation(_graph(6, 4, 1, 3, 4, 3), linear_terms={"conv": np.full(6, 12345 << 8, np.int64)})
    grads = []
    for em in (plain, comp):
        a.grad = w.grad = None
        em.conv_products("conv", a, w, params).sum().backward()
        grads.append((a.grad.clone(), w.grad.clone()))
    assert torch.equal(grads[0][0], grads[1][0]) and torch.equal(grads[0][1], grads[1][1])


def test_linear_terms_name_an_approximable_node():
    model = _graph(6, 4, 1, 3, 4, 3)
    with pytest.raises(ValueError, match="no Conv/MatMul/Gemm node"):
        QDQEmulation(model, linear_terms={"flat": np.zeros(6, np.int64)})
    with pytest.raises(ValueError, match="integer vector"):
        QDQEmulation(model, linear_terms={"conv": np.zeros(6, np.float32)})
