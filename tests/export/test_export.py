"""Export of every (arch, topology) pair: fp32 parity, symmetric QDQ, the PyTorch emulation."""

import logging

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

import models
from export.emulation import QDQEmulation
from export.exporter import export_model
from modelfile import metadata
from export.quantize import ACTIVATION_ZERO_POINT, check_scheme, quantized_ops
from runtime.ort import session

from axmoe_testing import DATA, PAIRS, calibration, small_model

logging.getLogger().setLevel(logging.ERROR)


@pytest.fixture(scope="module", params=PAIRS, ids=[f"{a}-{t}" for a, t in PAIRS])
def exported(request, tmp_path_factory):
    arch, topology = request.param
    model = small_model(arch, topology)
    out = tmp_path_factory.mktemp(f"{arch}-{topology}") / "model.onnx"
    report = export_model(model, model.axmoe_config, DATA, out, calibration_batches=calibration())
    return model, report


def test_fp32_parity_for_batches_1_3_32(exported):
    model, report = exported
    assert set(report.parity) == {1, 3, 32}
    assert max(report.parity.values()) <= 1e-5
    onnx.checker.check_model(onnx.load(str(report.fp32_path)), full_check=True)


def test_int8_graph_holds_only_symmetric_qdq(exported):
    _, report = exported
    int8 = onnx.load(str(report.int8_path))
    assert check_scheme(int8) == []
    ops = quantized_ops(int8)
    assert ops and all(op.activation_dtype == "uint8" and op.activation_zero_point == ACTIVATION_ZERO_POINT
                       for op in ops)
    assert all(op.weight_dtype == "int8" and not any(op.weight_zero_points) for op in ops if op.weight_is_constant)
    inits = {i.name: numpy_helper.to_array(i) for i in int8.graph.initializer}
    for node in int8.graph.node:
        if node.op_type == "QuantizeLinear":
            zp = inits[node.input[2]]
            assert zp.dtype == np.uint8 and int(zp) == ACTIVATION_ZERO_POINT, node.name
    meta = metadata.raw(int8)
    assert meta["axmoe.quantization"].startswith("symmetric-int8")
    assert meta["axmoe.calibration"] == "minmax" and meta["axmoe.arch"] in models.list_archs()


def test_int8_runs_and_emulation_agrees(exported):
    model, report = exported
    int8 = onnx.load(str(report.int8_path))
    x = np.random.default_rng(1).standard_normal((24, 3, 32, 32)).astype(np.float32)
    (ort_logits,) = session(report.int8_path).run(None, {"input": x})
    with torch.no_grad():
        emu = QDQEmulation(int8)(torch.from_numpy(x)).numpy()
    step = float(numpy_helper.to_array(next(i for i in int8.graph.initializer if i.name == "logits_scale")))
    assert np.mean(emu.argmax(1) == ort_logits.argmax(1)) >= 0.95
    if model.axmoe_config["arch"] != "vit_small":
        # identical scales and rounding: equal, or one requantization step apart
        assert np.abs(emu - ort_logits).max() <= step * 1.001
    else:
        # onnxruntime's fused quantized transformer kernels (QDQSelectorActionTransformer)
        # round intermediate requantizations differently; the graph's own semantics, which the
        # emulation executes, agree exactly once that fusion is off
        import onnxruntime as ort

        from runtime.ort import session_options

        unfused = ort.InferenceSession(str(report.int8_path), session_options(),
                                       providers=["CPUExecutionProvider"],
                                       disabled_optimizers=["QDQSelectorActionTransformer"])
        (plain,) = unfused.run(None, {"input": x})
        assert np.array_equal(plain, emu)


def test_emulation_weights_are_trainable_and_start_at_the_stored_integers(tmp_path):
    model = small_model("resnet20", "dense")
    report = export_model(model, model.axmoe_config, DATA, tmp_path / "m.onnx", calibration_batches=calibration())
    int8, fp = onnx.load(str(report.int8_path)), onnx.load(str(report.fp32_path))
    weights = {i.name: numpy_helper.to_array(i) for i in fp.graph.initializer}
    fixed, trainable = QDQEmulation(int8), QDQEmulation(int8, weights)
    assert len(trainable.trainable_names()) == 2 * len(quantized_ops(int8))  # weight + bias each
    x = torch.randn(8, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(fixed(x), trainable(x))
    loss = trainable(x).square().mean()
    loss.backward()
    grads = [p.grad for p in trainable.params.values()]
    assert all(g is not None for g in grads) and any(g.abs().sum() > 0 for g in grads)


def _route_everything_to_expert_0(model):
    from models.gating import TopKGate

    gates = [m for m in model.modules() if isinstance(m, TopKGate)]
    assert gates
    with torch.no_grad():
        for gate in gates:
            gate.w_gate.weight.fill_(-1.0)
            gate.w_gate.weight[0].fill_(1.0)  # routing features are post-ReLU means, >= 0
    return model


def test_uncalibrated_experts_get_their_biases_at_sx_times_sw(tmp_path):
    """Experts no calibration image reaches borrow a sibling's activation scale; their int32
    biases, written by onnxruntime at the placeholder scale 1 * s_w, are requantized to
    s_x * s_w, so every Conv of the model follows the scheme (and fuses in onnxruntime)."""
    model = _route_everything_to_expert_0(small_model("resnet20", "hard"))
    report = export_model(model, model.axmoe_config, DATA, tmp_path / "m.onnx", calibration_batches=calibration())
    assert any("experts.1" in name for name in report.uncalibrated)
    int8 = onnx.load(str(tmp_path / "m.onnx"))
    assert check_scheme(int8) == []
    inits = {i.name: numpy_helper.to_array(i) for i in int8.graph.initializer}
    producers = {o: n for n in int8.graph.node for o in n.output}
    checked = 0
    for node in int8.graph.node:
        if node.op_type == "Conv" and "experts.1" in node.name and len(node.input) > 2:
            sx, sw, sb = (inits[producers[name].input[1]] for name in node.input[:3])
            np.testing.assert_allclose(sb, np.float32(sx) * sw, rtol=1e-6)
            checked += 1
    assert checked > 0


def test_check_scheme_names_a_bias_at_another_scale(tmp_path):
    model = small_model("resnet20", "dense")
    export_model(model, model.axmoe_config, DATA, tmp_path / "m.onnx", calibration_batches=calibration())
    int8 = onnx.load(str(tmp_path / "m.onnx"))
    conv = next(n for n in int8.graph.node if n.op_type == "Conv" and len(n.input) > 2)
    producers = {o: n for n in int8.graph.node for o in n.output}
    bias_scale = producers[conv.input[2]].input[1]
    init = next(i for i in int8.graph.initializer if i.name == bias_scale)
    init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init) * np.float32(2), bias_scale))
    assert check_scheme(int8) == [f"{conv.name}: int32 bias not at scale s_x * s_w"]
