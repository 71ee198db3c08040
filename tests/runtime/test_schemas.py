"""onnx.checker and shape inference accept models with the axmoe integer ops; the inferred
output shapes are ConvInteger's / MatMulInteger's; wrong dtypes are rejected."""

import onnx
import pytest
from onnx import TensorProto, helper, shape_inference

from modelfile.ops import DOMAIN, opset_imports, register_schemas


def model(op, inputs, names, **attrs):
    graph = helper.make_graph([helper.make_node(op, names, ["y"], domain=DOMAIN, **attrs)], "g",
                              [helper.make_tensor_value_info(*i) for i in inputs],
                              [helper.make_tensor_value_info("y", TensorProto.INT32, ["a", "b", "c", "d"][:4])])
    return helper.make_model(graph, opset_imports=opset_imports(), ir_version=10)


def inferred_shape(m):
    register_schemas()
    onnx.checker.check_model(m, full_check=True)
    dims = shape_inference.infer_shapes(m, strict_mode=True).graph.output[0].type.tensor_type.shape.dim
    return [d.dim_value for d in dims]


LUT = ("lut", TensorProto.INT32, [256, 256])


@pytest.mark.parametrize("x_type, zp", [(TensorProto.UINT8, True), (TensorProto.INT8, False)])
def test_conv_shape_inference(x_type, zp):
    m = model("ApproxConvInteger",
              [("x", x_type, [2, 4, 9, 9]), ("w", TensorProto.INT8, [6, 2, 3, 3]), ("zp", x_type, []), LUT],
              ["x", "w", "zp" if zp else "", "", "lut"], strides=[2, 2], pads=[1, 1, 1, 1], group=2)
    assert inferred_shape(m) == [2, 6, 5, 5]


def test_matmul_shape_inference_broadcasts():
    m = model("ApproxMatMulInteger", [("a", TensorProto.UINT8, [3, 1, 5, 7]), ("b", TensorProto.INT8, [2, 7, 4]),
                                      ("zp", TensorProto.UINT8, []), LUT], ["a", "b", "zp", "", "lut"])
    assert inferred_shape(m) == [3, 2, 5, 4]


@pytest.mark.parametrize("a_type, b_type", [(TensorProto.FLOAT, TensorProto.INT8),
                                            (TensorProto.UINT8, TensorProto.UINT8)])
def test_wrong_dtypes_are_rejected(a_type, b_type):
    m = model("ApproxMatMulInteger", [("a", a_type, [5, 7]), ("b", b_type, [7, 4]), LUT], ["a", "b", "", "", "lut"])
    with pytest.raises(Exception, match="unsupported type"):
        inferred_shape(m)
