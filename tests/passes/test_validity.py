"""The pass's post-condition (passes/validity.py): each check on a graph that breaks it, one-line
errors naming the node or value, and the structures that used to come out invalid (a value
another node still reads removed or renamed; recorded shapes that disagree with inference)."""

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import passes.rules._rule as rule_module
from passes import validity
from passes.approximate import ApproximationError, approximate
from runtime.ort import session

RNG = np.random.default_rng(3)


def _tiny(nodes, outputs, inits=(), value_info=()) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])], outputs,
                              list(inits), value_info=list(value_info))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


RELU = helper.make_node("Relu", ["x"], ["y"], name="relu")
Y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])


def test_a_valid_model_passes():
    model = _tiny([RELU], [Y])
    validity.check(model, model)


def test_a_read_of_a_value_nothing_produces_names_the_node_and_value():
    broken = _tiny([helper.make_node("Add", ["x", "gone"], ["y"], name="add")], [Y])
    with pytest.raises(validity.InvalidModelError, match=r"^Add node 'add' reads 'gone', which no graph input"):
        validity.check(broken, _tiny([RELU], [Y]))


def test_a_read_inside_a_subgraph_of_a_value_nothing_produces_is_found():
    body = helper.make_graph([helper.make_node("Neg", ["missing"], ["z"], name="neg")], "then", [],
                             [helper.make_tensor_value_info("z", TensorProto.FLOAT, [1, 4])])
    node = helper.make_node("If", ["cond"], ["y"], name="if", then_branch=body, else_branch=body)
    broken = _tiny([node], [Y], [numpy_helper.from_array(np.array(True), "cond")])
    with pytest.raises(validity.InvalidModelError, match="Neg node 'neg' reads 'missing'"):
        validity.check(broken, broken)


def test_a_lost_graph_output_is_named():
    renamed = _tiny([helper.make_node("Relu", ["x"], ["y2"], name="relu")],
                    [helper.make_tensor_value_info("y2", TensorProto.FLOAT, [1, 4])])
    with pytest.raises(validity.InvalidModelError, match=r"^graph output 'y' of the input model is gone$"):
        validity.check(renamed, _tiny([RELU], [Y]))


def test_a_graph_output_that_changed_type_or_shape_is_named():
    source = _tiny([RELU], [Y])
    cast = _tiny([helper.make_node("Cast", ["x"], ["y"], to=TensorProto.INT32)],
                 [helper.make_tensor_value_info("y", TensorProto.INT32, [1, 4])])
    with pytest.raises(validity.InvalidModelError, match="graph output 'y' changed type: FLOAT -> INT32"):
        validity.check(cast, source)
    reshaped = _tiny([helper.make_node("Reshape", ["x", "s"], ["y"])],
                     [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])],
                     [numpy_helper.from_array(np.array([4], np.int64), "s")])
    with pytest.raises(validity.InvalidModelError, match=r"graph output 'y' changed shape: \[1, 4\] -> \[4\]"):
        validity.check(reshaped, source)


def test_a_graph_output_whose_open_dims_inference_resolved_is_kept():
    open_dims = _tiny([RELU], [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", None])])
    validity.check(_tiny([RELU], [Y]), open_dims)  # ["n", None] -> [1, 4]: a refinement
    fixed_changed = _tiny([RELU], [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 5])])
    with pytest.raises(validity.InvalidModelError, match=r"changed shape: \['n', 5\] -> \[1, 4\]"):
        validity.check(_tiny([RELU], [Y]), fixed_changed)


def test_a_recorded_shape_inference_disagrees_with_names_the_node():
    """Issue 15's `differ in rank: (1) vs (0)`: a 1-element value recorded as a scalar."""
    nodes = [helper.make_node("ReduceSum", ["x"], ["s"], name="sum", keepdims=0, noop_with_empty_axes=0),
             helper.make_node("Unsqueeze", ["s", "axes"], ["t"], name="unsqueeze"),
             helper.make_node("Add", ["x", "t"], ["y"], name="add")]
    wrong = helper.make_tensor_value_info("t", TensorProto.FLOAT, [])  # t is [1]
    model = _tiny(nodes, [Y], [numpy_helper.from_array(np.array([0], np.int64), "axes")], [wrong])
    with pytest.raises(validity.InvalidModelError) as info:
        validity.check(model, _tiny([RELU], [Y]))
    message = str(info.value)
    assert "\n" not in message and message.startswith("at Unsqueeze node 'unsqueeze': ") and "rank" in message


def test_a_source_the_checker_rejects_only_gets_the_structural_checks():
    """A model onnxruntime runs but onnx.checker rejects is not refused for what it brought."""
    nodes = [helper.make_node("Relu", ["x"], ["t"], name="relu"), helper.make_node("Neg", ["t"], ["y"], name="neg")]
    odd = _tiny(nodes, [Y], value_info=[helper.make_tensor_value_info("t", TensorProto.FLOAT, [1, 5])])
    assert validity.checker_failure(odd) is not None
    validity.check(odd, odd)
    broken = _tiny([helper.make_node("Neg", ["t"], ["y"], name="neg")], [Y])
    with pytest.raises(validity.InvalidModelError, match="reads 't'"):
        validity.check(broken, odd)


# ------------------------------------------------------------------ graphs the pass used to break
def _qdq_structures() -> onnx.ModelProto:
    """x -> Q -> DQ -> convA (weight DQ shared with nothing) -> Q (a graph output, "qa") -> DQ
    -> [Relu, a float consumer: graph output "relu"] and -> Reshape / Transpose / Reshape (channel
    shuffle) -> Q -> DQ -> convB and convC (one weight DQ shared by both, the activation shared
    too) -> Add -> + residual (the DQ) -> Q -> DQ -> "y"; convD reads convA's DQ directly (its
    activation is the value convA's rewrite replaces, and renames: "qa" is a graph output)."""
    u8 = lambda v: np.array(v, np.uint8)  # noqa: E731
    inits = {
        "s_x": np.float32(0.05), "s_a": np.float32(0.08), "s_y": np.float32(0.1), "zp": u8(128),
        "wa": RNG.integers(-60, 60, (4, 3, 3, 3)).astype(np.int8), "sa_w": np.full(4, 0.01, np.float32),
        "wb": RNG.integers(-60, 60, (4, 4, 1, 1)).astype(np.int8), "sb_w": np.float32(0.02),
        "w0": np.zeros(4, np.int8), "shape5": np.array([1, 2, 2, 8, 8], np.int64),
        "shape4": np.array([1, 4, 8, 8], np.int64),
    }
    node = helper.make_node
    nodes = [
        node("QuantizeLinear", ["x", "s_x", "zp"], ["xq"]), node("DequantizeLinear", ["xq", "s_x", "zp"], ["xd"]),
        node("DequantizeLinear", ["wa", "sa_w", "w0"], ["wad"], axis=0),
        node("Conv", ["xd", "wad"], ["a"], name="convA", pads=[1, 1, 1, 1]),
        node("QuantizeLinear", ["a", "s_a", "zp"], ["qa"]), node("DequantizeLinear", ["qa", "s_a", "zp"], ["ad"]),
        node("Relu", ["ad"], ["relu"]),
        node("Reshape", ["ad", "shape5"], ["r5"]), node("Transpose", ["r5"], ["t5"], perm=[0, 2, 1, 3, 4]),
        node("Reshape", ["t5", "shape4"], ["shuffled"]),
        node("QuantizeLinear", ["shuffled", "s_a", "zp"], ["sq"]),
        node("DequantizeLinear", ["sq", "s_a", "zp"], ["sd"]),
        node("DequantizeLinear", ["wb", "sb_w"], ["wbd"]),
        node("Conv", ["sd", "wbd"], ["b"], name="convB"), node("Conv", ["sd", "wbd"], ["c"], name="convC"),
        node("Conv", ["ad", "wbd"], ["d"], name="convD"),
        node("Add", ["b", "c"], ["bc"]), node("Add", ["bc", "d"], ["bcd"]), node("Add", ["bcd", "sd"], ["res"]),
        node("QuantizeLinear", ["res", "s_y", "zp"], ["yq"]), node("DequantizeLinear", ["yq", "s_y", "zp"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes, "structures", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8]),
         helper.make_tensor_value_info("qa", TensorProto.UINT8, [1, 4, 8, 8]),
         helper.make_tensor_value_info("relu", TensorProto.FLOAT, [1, 4, 8, 8])],
        [numpy_helper.from_array(np.asarray(v), k) for k, v in inits.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def _run(model: onnx.ModelProto, x: np.ndarray) -> dict:
    runner = session(model.SerializeToString(), threads=1)
    return dict(zip([o.name for o in runner.get_outputs()], runner.run(None, {"x": x})))


def test_shared_and_reshaped_qdq_values_survive_every_lowering():
    model = _qdq_structures()
    onnx.checker.check_model(model, full_check=True)
    x = RNG.standard_normal((1, 3, 8, 8)).astype(np.float32)
    base = _run(model, x)
    exact, _ = approximate(model, {"multiplier": "exact"})
    assert all(np.array_equal(_run(exact, x)[k], v) for k, v in base.items())
    outs = {}
    for lowering in ("lut", "decomposed"):
        out, report = approximate(model, {"multiplier": "mul8s_1KVA", "lowering": lowering})
        convs = ("convA", "convB", "convC", "convD")
        assert [(n.node, n.status) for n in report.nodes] == [(c, "rewritten") for c in convs]
        assert [o.name for o in out.graph.output] == ["y", "qa", "relu"]
        validity.check(out, model)
        outs[lowering] = _run(out, x)
        assert not np.array_equal(outs[lowering]["y"], base["y"])
    assert all(np.array_equal(outs["lut"][k], outs["decomposed"][k]) for k in base)


def test_the_pass_never_returns_an_invalid_model(monkeypatch):
    """A rewrite that loses a graph output (here: replace_output without keeping the name) is
    caught by the post-condition, in one line."""
    def careless(graph, op, new):
        op.output.replace_all_uses_with(new, replace_graph_outputs=True)

    monkeypatch.setattr(rule_module, "replace_output", careless)
    with pytest.raises(ApproximationError) as info:
        approximate(_qdq_structures(), {"multiplier": "mul8s_1KVA", "lowering": "lut"})
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("the rewritten model is invalid, so it is not written: graph output 'qa'")
