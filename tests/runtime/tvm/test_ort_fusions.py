"""runtime.tvm.ort_fusions: onnxruntime's fused nodes put into the model, the rest kept.

The model after `apply` has exactly the fused ops of onnxruntime's own optimized graph, still
runs in onnxruntime with the same outputs, and a model with nothing to fuse comes back as it is."""

import collections

import numpy as np
import onnx
import pytest

from axmoe_testing import run_ort
from runtime.tvm import ort_fusions
from runtime.tvm.frontend import integer_form


def fused_ops(model: onnx.ModelProto) -> collections.Counter:
    return collections.Counter((n.domain, n.op_type) for n in model.graph.node
                               if (n.domain, n.op_type) in ort_fusions.FUSED)


@pytest.mark.parametrize("topology", ["hard", "soft"])
def test_vit_gets_onnxruntimes_fusions(topology, rewritten, images):
    model = integer_form(onnx.load(str(rewritten("vit_small", topology, "mul8s_1KVA", "lut"))))
    fused = ort_fusions.apply(model)
    want = fused_ops(ort_fusions.optimized_graph(model))
    assert fused_ops(fused) == want
    assert want[("", "QLinearMatMul")] >= 4 and want[(ort_fusions.ORT_DOMAIN, "QLinearSoftmax")] >= 2
    onnx.checker.check_model(fused)
    assert np.array_equal(run_ort(fused, images[:8]), run_ort(model, images[:8]))
    assert ort_fusions.apply(fused).graph.node == fused.graph.node  # nothing left to fuse


def test_resnet_has_nothing_to_fuse(rewritten):
    model = integer_form(onnx.load(str(rewritten("resnet20", "dense", "mul8s_1KVA", "lut"))))
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
