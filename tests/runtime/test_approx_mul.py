"""The custom-op library loads in onnxruntime: axmoe.ApproxMul against the LUTs."""

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

import multipliers
import runtime.ort
from modelfile.ops import DOMAIN, opset_imports, register_schemas


def approx_mul_model() -> onnx.ModelProto:
    graph = helper.make_graph(
        [helper.make_node("ApproxMul", ["a", "b", "lut"], ["y"], domain=DOMAIN)], "approx_mul",
        [helper.make_tensor_value_info("a", TensorProto.INT8, ["n", "m"]),
         helper.make_tensor_value_info("b", TensorProto.INT8, ["n", "m"]),
         helper.make_tensor_value_info("lut", TensorProto.INT32, [256, 256])],
        [helper.make_tensor_value_info("y", TensorProto.INT32, ["n", "m"])])
    return helper.make_model(graph, opset_imports=opset_imports(), ir_version=10)


@pytest.fixture(scope="module")
def session():
    return runtime.ort.session(approx_mul_model().SerializeToString(), threads=1)


def test_schema_makes_checker_accept_the_model():
    register_schemas()
    register_schemas()  # idempotent
    onnx.checker.check_model(approx_mul_model(), full_check=True)


@pytest.mark.parametrize("name", list(multipliers.catalog()) + ["mitchell", "drum:4"])
def test_every_operand_pair_equals_the_lut(session, name):
    lut = multipliers.get(name).lut
    a, b = np.meshgrid(np.arange(-128, 128, dtype=np.int8), np.arange(-128, 128, dtype=np.int8), indexing="ij")
    (y,) = session.run(None, {"a": a, "b": b, "lut": lut})
    assert y.dtype == np.int32 and np.array_equal(y, lut)


@pytest.mark.parametrize("feeds, message", [
    (dict(b=np.zeros((2, 2), np.int8)), "same shape"),
    (dict(lut=np.zeros((16, 16), np.int32)), "256"),
])
def test_bad_inputs_return_an_error_status(session, feeds, message):
    args = dict(a=np.zeros((2, 3), np.int8), b=np.zeros((2, 3), np.int8), lut=multipliers.exact_lut())
    args.update(feeds)
    with pytest.raises(ort.capi.onnxruntime_pybind11_state.InvalidArgument, match=message):
        session.run(None, args)


def test_library_path_override(monkeypatch, tmp_path):
    monkeypatch.setenv("AXMOE_ORT_LIBRARY", str(tmp_path / "nope.so"))
    with pytest.raises(runtime.ort.LibraryNotFoundError, match="not a file"):
        runtime.ort.library_path()
