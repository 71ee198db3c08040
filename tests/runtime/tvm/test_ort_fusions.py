"""runtime.tvm.ort_fusions: onnxruntime's fused nodes put into the model, the rest kept.

The model after `apply` has exactly the fused ops of onnxruntime's own optimized graph (the
int8 QDQ groups it runs as integer kernels included, and none it leaves as float ops), still
runs in onnxruntime with the same outputs, and a model with nothing to fuse comes back as it is."""

import collections

import numpy as np
import onnx
import pytest

from axmoe_testing import run_ort
from runtime.tvm import ort_fusions


def fused_ops(model: onnx.ModelProto) -> collections.Counter:
    return collections.Counter((n.domain, n.op_type) for n in model.graph.node
                               if (n.domain, n.op_type) in ort_fusions.FUSED)


@pytest.mark.parametrize("topology", ["hard", "soft"])
def test_vit_gets_onnxruntimes_fusions(topology, rewritten, images):
    model = onnx.load(str(rewritten("vit_small", topology, "mul8s_1KVA", "lut")))
    fused = ort_fusions.apply(model)
    want = fused_ops(ort_fusions.optimized_graph(model))
    assert fused_ops(fused) == want
    assert want[("", "QLinearMatMul")] >= 4 and want[(ort_fusions.ORT_DOMAIN, "QLinearSoftmax")] >= 2
    onnx.checker.check_model(fused)
    assert np.array_equal(run_ort(fused, images[:8]), run_ort(model, images[:8]))
    assert ort_fusions.apply(fused).graph.node == fused.graph.node  # nothing left to fuse


@pytest.mark.parametrize("topology", ["dense", "hard"])
def test_qdq_groups_become_onnxruntimes_integer_kernels(topology, int8_model, images):
    model = int8_model("resnet20", topology)
    fused = ort_fusions.apply(model)
    optimized = ort_fusions.optimized_graph(model)
    want = fused_ops(optimized)
    assert fused_ops(fused) == want
    assert want[("", "QLinearConv")] >= 19 and want[(ort_fusions.ORT_DOMAIN, "QGemm")] == 1
    # every conv fuses (the exporter writes every bias at s_x s_w, uncalibrated experts included)
    convs = [collections.Counter(n.op_type for n in g.node)["Conv"] for g in (fused.graph, optimized.graph)]
    assert convs == [0, 0]
    onnx.checker.check_model(fused)
    assert np.array_equal(run_ort(fused, images[:8]), run_ort(model, images[:8]))


def test_a_group_onnxruntime_leaves_unfused_stays_a_float_conv(int8_model, images):
    """A bias quantized at a scale other than s_x s_w: onnxruntime keeps that Conv in float,
    and so does the fused graph TVM imports."""
    model = onnx.ModelProto()
    model.CopyFrom(int8_model("resnet20", "dense"))  # the fixture's model is shared
    producers = {o: n for n in model.graph.node for o in n.output}
    conv = next(n for n in model.graph.node if n.op_type == "Conv" and len(n.input) > 2)
    bias_scale = producers[conv.input[2]].input[1]
    init = next(i for i in model.graph.initializer if i.name == bias_scale)
    init.CopyFrom(onnx.numpy_helper.from_array(onnx.numpy_helper.to_array(init) * np.float32(2), bias_scale))
    fused = ort_fusions.apply(model)
    optimized = ort_fusions.optimized_graph(model)
    convs = [collections.Counter(n.op_type for n in g.node)["Conv"] for g in (fused.graph, optimized.graph)]
    assert convs == [1, 1]
    assert np.array_equal(run_ort(fused, images[:8]), run_ort(model, images[:8]))


def test_resnet_has_nothing_to_fuse(rewritten):
    model = onnx.load(str(rewritten("resnet20", "dense", "mul8s_1KVA", "lut")))  # every conv approximated
    assert ort_fusions.apply(model) is model


def test_model_onnxruntime_cannot_load_is_refused():
    graph = onnx.helper.make_graph([onnx.helper.make_node("Relu", ["x"], ["y"])], "g",
                                   [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.STRING, [1])],
                                   [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.STRING, [1])])
    with pytest.raises(ort_fusions.FusionError, match="onnxruntime cannot load the model"):
        ort_fusions.apply(onnx.helper.make_model(graph))


def test_every_fused_op_has_a_converter():
    from runtime.tvm.frontend import convert_map

    assert {op for _, op in ort_fusions.FUSED} <= set(convert_map())
