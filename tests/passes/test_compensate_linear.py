"""`linear` compensation (passes.compensate, the control variate): g and the bias equal a
brute-force least-squares oracle over every output pixel of small layers; the sampled
receptive fields are those of the op (routed rows only for MoE experts); the rewritten model
in onnxruntime (lut and decomposed lowerings) equals the oracle plus the integer term; the
exact multiplier is a no-op; bad requests end in one line."""

import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import helper, numpy_helper

import multipliers
from axmoe_testing import run_ort
from modelfile import metadata
from modelfile.ops import LINEAR_FRACTION_BITS
from multipliers.oracle import lut_conv, lut_matmul
from passes import calibration
from passes.approximate import ApproximationError, approximate
from passes.calibration import CompensationError
from passes.compensate import compensate, linear_terms, uniform_assignment
from runtime.ort import session

sys.path.insert(0, str(Path(__file__).parents[1] / "runtime"))
from op_models import linear_reference  # noqa: E402

EXACT = multipliers.exact_lut()
CONV_CASES = [  # (C, M, H, W, kernel, strides, pads, dilations, group)
    (2, 3, 5, 5, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 1),
    (4, 4, 6, 5, (3, 2), (2, 1), (0, 1, 2, 0), (1, 2), 2),
    (3, 3, 4, 4, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 3),
]
MULTS = ["mul8s_1L2L", "mul8s_1L2N", "mul8s_1KX5"]
UNIT = 1 << LINEAR_FRACTION_BITS


def _model(node, shape, weight, out_type=onnx.TensorProto.INT32):
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", onnx.TensorProto.UINT8, [None, *shape])],
                              [helper.make_tensor_value_info("y", out_type, None)],
                              [numpy_helper.from_array(weight, "w"), numpy_helper.from_array(np.uint8(128), "xzp")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=10)


def brute_force_fit(errors, sums):
    """(g, c) of the least-squares fit e ~ beta + gamma S over every pixel (rows), per column."""
    g, c = [], []
    for e, s in zip(errors.T.astype(np.float64), sums.T.astype(np.float64)):
        design = np.stack([np.ones_like(s), s], axis=1)
        (beta, gamma), *_ = np.linalg.lstsq(design, e, rcond=None)
        g.append(int(np.rint(-gamma * UNIT)))
        c.append(int(np.rint(e.mean() + g[-1] * s.mean() / UNIT)))
    return np.array(g, np.int64), np.array(c, np.int64)


def _tuned_weight(out, op_type):
    node = next(n for n in out.graph.node if n.op_type == op_type)
    return numpy_helper.to_array(next(i for i in out.graph.initializer if i.name == node.input[1]))


@pytest.mark.parametrize("case", CONV_CASES)
@pytest.mark.parametrize("name", MULTS)
def test_conv_linear_fit_equals_brute_force_least_squares(case, name):
    channels, m, h, w, kernel, strides, pads, dilations, group = case
    rng = np.random.default_rng(abs(hash((case, name))) % 2**32)
    weight = rng.integers(-120, 121, (m, channels // group, *kernel)).astype(np.int8)
    x = np.clip(rng.normal(140, 40, (3, channels, h, w)), 0, 255).astype(np.uint8)
    node = helper.make_node("ConvInteger", ["x", "w", "xzp"], ["y"], name="op", strides=list(strides),
                            pads=list(pads), dilations=list(dilations), group=group)
    model = _model(node, (channels, h, w), weight)
    stats = calibration.collect(model, x, pixels=calibration.LINEAR_PIXELS)  # more than the 3 x OH x OW pixels
    mult = multipliers.get(name)
    out, report = compensate(model, {"op": mult}, stats, "linear")
    tuned = _tuned_weight(out, "ConvInteger")
    # the weights are those of weights+bias (same tuning)
    wb, _ = compensate(model, {"op": mult}, stats, "weights+bias")
    np.testing.assert_array_equal(tuned, _tuned_weight(wb, "ConvInteger"))
    a = x.astype(np.int64) - 128
    geometry = dict(strides=strides, pads=pads, dilations=dilations, group=group)
    errors = lut_conv(a, tuned, mult.lut, **geometry).astype(np.int64) - lut_conv(a, weight, EXACT, **geometry)
    ones = np.ones((group, channels // group, *kernel), np.int8)
    sums = np.repeat(lut_conv(a, ones, EXACT, **geometry).astype(np.int64), m // group, axis=1)  # S by exact products
    g, c = brute_force_fit(errors.transpose(1, 0, 2, 3).reshape(m, -1).T, sums.transpose(1, 0, 2, 3).reshape(m, -1).T)
    entry = report.nodes[0]
    assert entry.errors["linear_pixels"] == errors[:, 0].size
    np.testing.assert_array_equal(np.array(entry.linear or [0] * m), g)
    np.testing.assert_array_equal(np.array(entry.bias or [0] * m), c)
    np.testing.assert_array_equal(linear_terms(out).get("op", np.zeros(m, np.int64)), g)
    want = lut_conv(a, tuned, mult.lut, **geometry).astype(np.int64) - c[None, :, None, None] \
        + linear_reference(a, tuned.shape, g, kind="conv", **geometry)
    for lowering in ("lut", "decomposed"):
        rewritten, rep = approximate(out, {"multiplier": name, "lowering": lowering})
        got = session(rewritten.SerializeToString(), threads=1).run(None, {"x": x})[0]
        np.testing.assert_array_equal(got, want)
        assert rep.nodes[0].linear_additions == errors[0, 0].size * group * (channels // group) * int(np.prod(kernel))
    # and the fit beats weights+bias on the calibration pixels
    assert entry.errors["output_mse_linear"] <= entry.errors["output_mse_bias"]


@pytest.mark.parametrize("name", MULTS)
def test_matmul_linear_fit_equals_brute_force_least_squares(name):
    rng = np.random.default_rng(5)
    weight = rng.integers(-127, 128, (6, 5)).astype(np.int8)
    x = np.clip(rng.normal(100, 50, (4, 3, 6)), 0, 255).astype(np.uint8)  # (batch, tokens, K)
    model = _model(helper.make_node("MatMulInteger", ["x", "w", "xzp"], ["y"], name="op"), (3, 6), weight)
    stats = calibration.collect(model, x, pixels=64)
    mult = multipliers.get(name)
    out, report = compensate(model, {"op": mult}, stats, "linear")
    tuned = _tuned_weight(out, "MatMulInteger")
    a = (x.astype(np.int64) - 128).reshape(-1, 6)
    errors = lut_matmul(a, tuned, mult.lut).astype(np.int64) - lut_matmul(a, weight, EXACT)
    g, c = brute_force_fit(errors, np.repeat(a.sum(1, keepdims=True), 5, axis=1))
    np.testing.assert_array_equal(np.array(report.nodes[0].linear or [0] * 5), g)
    np.testing.assert_array_equal(np.array(report.nodes[0].bias or [0] * 5), c)
    a3 = x.astype(np.int64) - 128
    want = lut_matmul(a3, tuned, mult.lut) - c + linear_reference(a3, tuned.shape, g, kind="matmul")
    for lowering in ("lut", "decomposed"):
        rewritten, _ = approximate(out, {"multiplier": name, "lowering": lowering})
        np.testing.assert_array_equal(session(rewritten.SerializeToString(), threads=1).run(None, {"x": x})[0], want)


def test_sampled_patches_are_the_receptive_fields():
    rng = np.random.default_rng(1)
    weight = rng.integers(-10, 10, (2, 3, 3, 2)).astype(np.int8)
    x = rng.integers(0, 256, (5, 3, 6, 7)).astype(np.uint8)
    node = helper.make_node("ConvInteger", ["x", "w", "xzp"], ["y"], name="op", strides=[2, 1], pads=[1, 0, 1, 1],
                            dilations=[1, 2])
    model = _model(node, (3, 6, 7), weight)
    full = calibration.collect(model, x, batch=2, pixels=10_000)["op"]
    # every position once: the patches' histogram per (channel, tap) is the op's histogram
    counts = np.stack([np.stack([np.bincount(full.patches[:, c, t].astype(np.int64) + 128, minlength=256)
                                 for t in range(6)]) for c in range(3)])
    np.testing.assert_array_equal(counts, full.hist)
    part = calibration.collect(model, x, batch=2, pixels=40)["op"]
    again = calibration.collect(model, x, batch=2, pixels=40)["op"]
    assert part.patches.shape == (40, 3, 6) and np.array_equal(part.patches, again.patches)  # reproducible
    rows = {r.tobytes() for r in full.patches.reshape(len(full.patches), -1)}
    assert all(r.tobytes() in rows for r in part.patches.reshape(40, -1))


def test_expert_samples_are_routed_rows_only(int8_resnet, images):
    stats = calibration.collect(int8_resnet, images, pixels=100_000)
    experts = [s for name, s in stats.nodes.items() if "experts." in name]
    assert experts and any(s.rows < len(images) for s in experts)
    for entry in experts:
        if entry.rows == 0:
            assert entry.patches is None
            continue
        channels, taps = entry.hist.shape[:2]
        counts = np.stack([np.stack([np.bincount(entry.patches[:, c, t].astype(np.int64) + 128, minlength=256)
                                     for t in range(taps)]) for c in range(channels)])
        np.testing.assert_array_equal(counts, entry.hist)  # exactly the products of the routed rows


def test_resnet_linear_lut_and_decomposed_agree_and_record_terms(int8_resnet, images):
    stats = calibration.collect(int8_resnet, images, pixels=512)
    name = "mul8s_1L2L"
    out, report = compensate(int8_resnet, uniform_assignment(int8_resnet, name), stats, "linear")
    terms = linear_terms(out)
    assert len(terms) > 10 and report.mode == "linear"
    recorded = metadata.get(out, metadata.COMPENSATION)
    assert {n["node"] for n in recorded["nodes"] if n.get("linear")} == set(terms)
    lut_model, lut_report = approximate(out, {"multiplier": name, "lowering": "lut"})
    dec_model, _ = approximate(out, {"multiplier": name, "lowering": "decomposed"})
    np.testing.assert_array_equal(run_ort(lut_model, images), run_ort(dec_model, images))
    assert linear_terms(lut_model).keys() == terms.keys()
    rewritten = [n for n in lut_report.nodes if n.node in terms]
    # one K-sum per output pixel (and group): a fraction of the op's MACs (exact counts: the small-layer tests)
    assert rewritten and all(0 < n.linear_additions < n.macs_per_row for n in rewritten)
    entries = metadata.get(lut_model, metadata.ASSIGNMENT)
    assert all(entries[n]["linear"] for n in terms)
    try:
        from export.emulation import QDQEmulation
        tables = {n: multipliers.get(e["multiplier"]) for n, e in entries.items()}
        with torch.no_grad():
            emulated = QDQEmulation(out, multipliers=tables, linear_terms=terms)(torch.from_numpy(images)).numpy()
    except TypeError as exc:  # the emulation's linear_terms kwarg is another engineer's change
        pytest.fail(f"export.emulation.QDQEmulation does not take linear_terms yet: {exc}")
    np.testing.assert_array_equal(emulated, run_ort(lut_model, images))


@pytest.mark.parametrize("mode", ["linear"])
def test_exact_multiplier_is_a_no_op(int8_resnet, images, mode):
    stats = calibration.collect(int8_resnet, images, pixels=64)
    out, report = compensate(int8_resnet, uniform_assignment(int8_resnet, "exact"), stats, mode)
    assert out.SerializeToString() == int8_resnet.SerializeToString() and not report.changed
    assert linear_terms(out) == {}
    rewritten, _ = approximate(int8_resnet, {"multiplier": "exact", "compensate": mode}, images)
    np.testing.assert_array_equal(run_ort(rewritten, images), run_ort(int8_resnet, images))


def test_bad_requests_are_one_line(int8_resnet, images):
    stats = calibration.collect(int8_resnet, images)  # histograms only
    with pytest.raises(CompensationError, match="needs sampled receptive fields") as info:
        compensate(int8_resnet, uniform_assignment(int8_resnet, "mul8s_1KVA"), stats, "linear")
    assert "\n" not in str(info.value)
    with pytest.raises(CompensationError, match="pixels must be a whole number"):
        calibration.collect(int8_resnet, images, pixels=-1)
    sampled = calibration.collect(int8_resnet, images, pixels=64)
    out, _ = compensate(int8_resnet, uniform_assignment(int8_resnet, "mul8s_1KVA"), sampled, "linear")
    with pytest.raises(ApproximationError, match="fitted for mul8s_1KVA, the plan gives mul8s_1L2L") as info:
        approximate(out, {"multiplier": "mul8s_1L2L"})
    assert "\n" not in str(info.value)


def test_qlinear_matmul_without_a_bias_fits_through_the_origin():
    """QLinearMatMul has no bias input: e ~ gamma S without intercept, and no bias correction."""
    rng = np.random.default_rng(8)
    weight = rng.integers(-127, 128, (6, 4)).astype(np.int8)
    inits = [numpy_helper.from_array(np.float32(0.05), "xs"), numpy_helper.from_array(np.uint8(128), "xzp"),
             numpy_helper.from_array(weight, "w"), numpy_helper.from_array(np.float32(0.02), "ws"),
             numpy_helper.from_array(np.int8(0), "wzp"), numpy_helper.from_array(np.float32(0.5), "ys"),
             numpy_helper.from_array(np.uint8(128), "yzp")]
    nodes = [helper.make_node("QuantizeLinear", ["x", "xs", "xzp"], ["xq"]),
             helper.make_node("QLinearMatMul", ["xq", "xs", "xzp", "w", "ws", "wzp", "ys", "yzp"], ["y"], name="op")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [None, 6])],
                              [helper.make_tensor_value_info("y", onnx.TensorProto.UINT8, None)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=10)
    x = (rng.standard_normal((40, 6)) * 2 + 1.5).astype(np.float32)
    stats = calibration.collect(model, x, pixels=100)
    mult = multipliers.get("mul8s_1L2L")
    out, report = compensate(model, {"op": mult}, stats, "linear")
    entry = report.nodes[0]
    assert entry.bias is None and entry.linear
    node = next(n for n in out.graph.node if n.op_type == "QLinearMatMul")
    tuned = numpy_helper.to_array(next(i for i in out.graph.initializer if i.name == node.input[3]))
    a = np.clip(np.rint(x / np.float32(0.05)) + 128, 0, 255).astype(np.int64) - 128
    errors = lut_matmul(a, tuned, mult.lut).astype(np.int64) - lut_matmul(a, weight, EXACT)
    s = a.sum(1).astype(np.float64)
    gamma = (errors * s[:, None]).sum(0) / (s * s).sum()
    np.testing.assert_array_equal(entry.linear, np.rint(-gamma * UNIT).astype(np.int64))
    rewritten, _ = approximate(out, {"multiplier": mult.name, "lowering": "lut"})
    acc = lut_matmul(a, tuned, mult.lut).astype(np.int64) + linear_reference(a, tuned.shape, np.array(entry.linear),
                                                                              kind="matmul")
    real = acc.astype(np.float32) * (np.float32(0.05) * np.float32(0.02) / np.float32(0.5)).astype(np.float32)
    want = np.clip(np.rint(real) + 128, 0, 255).astype(np.uint8)
    np.testing.assert_array_equal(session(rewritten.SerializeToString(), threads=1).run(None, {"x": x})[0], want)
