"""modelfile.ops: the custom-op domain and op names a model file carries, and their schemas."""

import onnx
from onnx import defs, helper

from modelfile import ops


def test_the_domain_and_op_names_are_the_file_format():
    assert (ops.DOMAIN, ops.VERSION) == ("axmoe", 1)
    assert ops.OPS == ("ApproxMul", "ApproxConvInteger", "ApproxMatMulInteger")
    assert (ops.APPROX_MUL, ops.APPROX_CONV_INTEGER, ops.APPROX_MATMUL_INTEGER) == ops.OPS


def test_register_schemas_registers_every_op_once():
    ops.register_schemas()
    ops.register_schemas()
    for name in ops.OPS:
        schema = defs.get_schema(name, ops.VERSION, ops.DOMAIN)
        assert (schema.name, schema.domain, schema.since_version) == (name, ops.DOMAIN, ops.VERSION)


def test_opset_imports():
    imports = ops.opset_imports(18)
    assert [(o.domain, o.version) for o in imports] == [("", 18), (ops.DOMAIN, ops.VERSION)]
    assert [(o.domain, o.version) for o in ops.opset_imports()] == [("", 17), (ops.DOMAIN, ops.VERSION)]


def test_a_model_using_the_domain_passes_the_checker():
    ops.register_schemas()
    node = helper.make_node(ops.APPROX_MUL, ["a", "b", "lut"], ["y"], domain=ops.DOMAIN)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("a", onnx.TensorProto.INT8, [4]),
                                            helper.make_tensor_value_info("b", onnx.TensorProto.INT8, [4]),
                                            helper.make_tensor_value_info("lut", onnx.TensorProto.INT32, [256, 256])],
                              [helper.make_tensor_value_info("y", onnx.TensorProto.INT32, [4])])
    onnx.checker.check_model(helper.make_model(graph, opset_imports=ops.opset_imports(), ir_version=10),
                             full_check=True)
