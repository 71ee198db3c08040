"""Router weights of an exported hard MoE: found as float initializers of their module, trained
through the emulation (which then still equals onnxruntime), and written back."""

import logging

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

from axmoe_testing import DATA, calibration, run_ort, small_model
from export.emulation import QDQEmulation
from export.exporter import export_model, router_node_names
from export.fp32 import fold_batchnorm
from export.requantize import float_initializers, write_floats

logging.getLogger().setLevel(logging.ERROR)


@pytest.fixture(scope="module")
def hard(tmp_path_factory):
    model = small_model("resnet20", "hard")
    path = tmp_path_factory.mktemp("hard") / "model.onnx"
    export_model(model, model.axmoe_config, DATA, path, calibration_batches=calibration())
    folded = fold_batchnorm(model)
    return folded, onnx.load(str(path))


def test_router_weight_is_found_transposed_under_its_generated_name(hard):
    folded, int8 = hard
    params = {k: v.detach().numpy() for k, v in folded.named_parameters()}
    found = float_initializers(int8, router_node_names(folded, int8), params)
    assert list(found.values()) == [("stages.2.gate.w_gate.weight", True)]  # w_noise is not in the eval graph
    (name,) = found
    stored = numpy_helper.to_array(next(i for i in int8.graph.initializer if i.name == name))
    assert np.array_equal(stored, params["stages.2.gate.w_gate.weight"].T)
    assert float_initializers(int8, [], params) == {}  # only the nodes named


def test_trainable_router_matches_onnxruntime_after_write_back(hard):
    folded, int8 = hard
    params = {k: v.detach().numpy() for k, v in folded.named_parameters()}
    (name,) = float_initializers(int8, router_node_names(folded, int8), params)
    value = numpy_helper.to_array(next(i for i in int8.graph.initializer if i.name == name))
    softmax = next(n for n in int8.graph.node if n.op_type == "Softmax" and "/gate/" in n.name)
    em = QDQEmulation(int8, trainable_floats={name: value}, taps=[softmax.input[0]])
    assert em.trainable_float_names() == [name] and em.float_value(name).requires_grad
    x = np.random.default_rng(0).standard_normal((8, 3, 32, 32)).astype(np.float32)
    em(torch.from_numpy(x)).sum().backward()
    assert em.float_value(name).grad is not None and em.tapped[softmax.input[0]].shape == (8, value.shape[1])
    with torch.no_grad():  # a different router, so the routing (and the class) changes
        em.float_value(name).copy_(torch.from_numpy(np.random.default_rng(1).standard_normal(value.shape) * 3))
    moved = onnx.ModelProto()
    moved.CopyFrom(int8)
    write_floats(moved, {name: em.float_value(name).detach().numpy()})
    with torch.no_grad():
        emulated = em(torch.from_numpy(x)).numpy()
    assert np.array_equal(emulated.argmax(1), run_ort(moved, x).argmax(1))
    assert not np.array_equal(run_ort(moved, x), run_ort(int8, x))


def test_write_floats_refuses_unknown_names_and_shapes(hard):
    _, int8 = hard
    name = next(i.name for i in int8.graph.initializer if i.name.startswith("onnx::MatMul"))
    with pytest.raises(ValueError, match="no initializer"):
        write_floats(int8, {"nope": np.zeros(1)})
    with pytest.raises(ValueError, match="does not match"):
        write_floats(int8, {name: np.zeros((1, 1))})
    with pytest.raises(ValueError, match="not a float initializer"):
        QDQEmulation(int8, trainable_floats={"nope": np.zeros(1)})
