"""The rewrite rules, one per source form: a negative test for every rejection reason of every
rule (and of the pass), each on a one-op graph that differs from an accepted one by one tensor
or attribute, asserting the op is skipped with that reason and the model is left unchanged."""

import re
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import onnx
import onnx_ir as ir
import pytest
from onnx import helper, numpy_helper

from passes.approximate import ApproximationPass, approximate
from passes.reasons import Reason, Rejection
from passes.rules import RULES, match

INPUT = object()  # an override making the tensor a graph input (so not a constant)
RNG = np.random.default_rng(0)
CONV_W = RNG.integers(-100, 100, (4, 3, 3, 3)).astype(np.int8)  # 4 output channels
MATMUL_W = RNG.integers(-100, 100, (3, 4)).astype(np.int8)  # K 3, N 4
MASK = "mul8s_1L2L"  # an operand-mask multiplier: every form rewrites under it by default


def _model(nodes, tensors: dict, overrides: dict, opset: int, y_dtype: int) -> onnx.ModelProto:
    """One graph of `nodes` over `tensors`, each an initializer unless it is "x" / "xf" or an
    override is INPUT; an override is an array or a function of the default array."""
    used = {name for node in nodes for name in node.input}
    inputs, inits = [], []
    for name, array in tensors.items():
        override = overrides.get(name)
        if callable(override):
            array = override(array)
        elif override is not None and override is not INPUT:
            array = override
        array = np.asarray(array)
        if name not in used:
            continue
        if name in ("x", "xf") or override is INPUT:
            dtype = helper.np_dtype_to_tensor_dtype(array.dtype)
            inputs.append(helper.make_tensor_value_info(name, dtype, array.shape))
        else:
            inits.append(numpy_helper.from_array(array, name))
    unknown = set(overrides) - set(tensors)
    assert not unknown, f"no tensor {unknown}"
    graph = helper.make_graph(nodes, "g", inputs, [helper.make_tensor_value_info("y", y_dtype, None)], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=10)


def _operands(conv: bool, per_channel_zp: bool) -> dict:
    shape = (1, 3, 5, 5) if conv else (1, 3)
    return {"x": np.zeros(shape, np.uint8), "xf": np.zeros(shape, np.float32), "xs": np.float32(0.05),
            "xzp": np.uint8(128), "w": CONV_W if conv else MATMUL_W, "ws": np.full(4, 0.01, np.float32),
            "wzp": np.zeros(4, np.int8) if per_channel_zp else np.int8(0)}


def qdq(op_type, attrs=None, opset=18, float_x=False, float_w=False, bias=False, **overrides):
    """x_q -> DQ -> Conv / Gemm / MatMul <- DQ <- w_q [<- DQ <- b]; float_x / float_w: that
    operand is a float tensor instead."""
    tensors = _operands(op_type == "Conv", True)
    tensors.update(wf=tensors["w"].astype(np.float32), b=np.zeros(4, np.int32), bs=np.full(4, 5e-4, np.float32))
    nodes = []
    if not float_x:
        nodes.append(helper.make_node("DequantizeLinear", ["x", "xs", "xzp"], ["xd"]))
    if not float_w:
        axis = 0 if op_type == "Conv" else 1  # the output channels
        nodes.append(helper.make_node("DequantizeLinear", ["w", "ws", "wzp"], ["wd"], axis=axis))
    if bias:
        nodes.append(helper.make_node("DequantizeLinear", ["b", "bs"], ["bd"], axis=0))
    inputs = ["xf" if float_x else "xd", "wf" if float_w else "wd"] + (["bd"] if bias else [])
    nodes.append(helper.make_node(op_type, inputs, ["y"], name="op", **(attrs or {})))
    return _model(nodes, tensors, overrides, opset, onnx.TensorProto.FLOAT)


def qlinear(op_type, attrs=None, opset=18, bias=False, **overrides):
    """QLinearConv / QLinearMatMul(x, xs, xzp, w, ws, wzp, ys, yzp[, b])."""
    conv = op_type == "QLinearConv"
    tensors = {**_operands(conv, conv), "ys": np.float32(0.5), "yzp": np.uint8(128), "b": np.zeros(4, np.int32)}
    if not conv:
        tensors["ws"] = np.float32(0.01)
    names = ["x", "xs", "xzp", "w", "ws", "wzp", "ys", "yzp"] + (["b"] if bias else [])
    return _model([helper.make_node(op_type, names, ["y"], name="op", **(attrs or {}))], tensors, overrides, opset,
                  onnx.TensorProto.UINT8)


def integer(op_type, attrs=None, opset=18, **overrides):
    """ConvInteger / MatMulInteger(x, w, xzp, wzp)."""
    tensors = _operands(op_type == "ConvInteger", False)
    node = helper.make_node(op_type, ["x", "w", "xzp", "wzp"], ["y"], name="op", **(attrs or {}))
    return _model([node], tensors, overrides, opset, onnx.TensorProto.INT32)


def qgemm(attrs=None, opset=18, bias=False, y="quantized", **overrides):
    """com.microsoft.QGemm(x, xs, xzp, w, ws, wzp, [b], [ys], [yzp]), transB=1 unless `attrs`
    say otherwise (w stored (N, K)); `y`: "quantized" (ys, yzp), "float" (neither),
    "scale_only" (ys without yzp)."""
    tensors = {**_operands(False, True), "ys": np.float32(0.5), "yzp": np.uint8(128), "b": np.zeros(4, np.int32)}
    tensors["w"] = MATMUL_W.T.copy()
    names = ["x", "xs", "xzp", "w", "ws", "wzp", "b" if bias else "", *{"quantized": ["ys", "yzp"], "float": [],
                                                                        "scale_only": ["ys"]}[y]]
    node = helper.make_node("QGemm", names, ["y"], name="op", domain="com.microsoft", **{"transB": 1, **(attrs or {})})
    model = _model([node], tensors, overrides, opset,
                   onnx.TensorProto.UINT8 if y == "quantized" else onnx.TensorProto.FLOAT)
    model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    # the output's shape (onnx does not infer com.microsoft ops), when the operands are a Gemm's
    shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim] for v in model.graph.input}
    shapes.update({t.name: list(t.dims) for t in model.graph.initializer})
    x_shape, w_shape = shapes["x"], shapes["w"]
    flags = {a.name: a.i for a in node.attribute if a.name in ("transA", "transB")}
    if len(x_shape) == 2 and len(w_shape) == 2:
        out = [x_shape[1 if flags.get("transA") else 0], w_shape[0 if flags.get("transB") else 1]]
        model.graph.output[0].type.tensor_type.shape.dim.extend(onnx.TensorShapeProto.Dimension(dim_value=d)
                                                                for d in out)
    return model


def in_subgraph(model: onnx.ModelProto, owner: str = "If") -> onnx.ModelProto:
    """`model`'s nodes and initializers moved into a subgraph: the then-branch of an If with a
    constant condition (the else-branch a Constant), or the body of a Loop run once (y its scan
    output); the body reads the graph input x from the outer scope."""
    g = onnx.shape_inference.infer_shapes(model).graph  # a subgraph's outputs need their shapes
    (y,) = g.output
    shape = [d.dim_value for d in y.type.tensor_type.shape.dim]
    if owner == "If":
        body = helper.make_graph(list(g.node), "then", [], [y], list(g.initializer))
        zeros = numpy_helper.from_array(np.zeros(shape, helper.tensor_dtype_to_np_dtype(y.type.tensor_type.elem_type)))
        other = helper.make_graph([helper.make_node("Constant", [], ["y_else"], value=zeros)], "else", [],
                                  [helper.make_tensor_value_info("y_else", y.type.tensor_type.elem_type, shape)])
        node = helper.make_node("If", ["cond"], ["y_out"], name="branch", then_branch=body, else_branch=other)
        inits = [numpy_helper.from_array(np.array(True), "cond")]
    else:
        carried = [helper.make_tensor_value_info("i", onnx.TensorProto.INT64, []),
                   helper.make_tensor_value_info("cond_in", onnx.TensorProto.BOOL, [])]
        nodes = list(g.node) + [helper.make_node("Identity", ["cond_in"], ["cond_out"])]
        body = helper.make_graph(nodes, "body", carried,
                                 [helper.make_tensor_value_info("cond_out", onnx.TensorProto.BOOL, []), y],
                                 list(g.initializer))
        node = helper.make_node("Loop", ["trips", "cond"], ["y_out"], name="loop", body=body)
        inits = [numpy_helper.from_array(np.array(1, np.int64), "trips"),
                 numpy_helper.from_array(np.array(True), "cond")]
    out = helper.make_tensor_value_info("y_out", y.type.tensor_type.elem_type, shape if owner == "If" else [1, *shape])
    graph = helper.make_graph([node], "g", list(g.input), [out], inits)
    return helper.make_model(graph, opset_imports=list(model.opset_import), ir_version=model.ir_version)


def as_type(dtype):
    return lambda array: np.asarray(array).astype(dtype)


def build(op_type, **overrides):
    """The accepted one-op graph of `op_type`'s source form, with `overrides`."""
    if op_type == "QGemm":
        return qgemm(**overrides)
    if op_type.startswith("QLinear"):
        return qlinear(op_type, **overrides)
    if op_type.endswith("Integer"):
        return integer(op_type, **overrides)
    return qdq(op_type, **overrides)


# the op types each rule matches
FORMS = {"qdq_conv": ["Conv"], "qdq_matmul": ["Gemm", "MatMul"], "qlinear_conv": ["QLinearConv"],
         "qlinear_matmul": ["QLinearMatMul"], "conv_integer": ["ConvInteger"], "matmul_integer": ["MatMulInteger"],
         "qgemm": ["QGemm"]}
CONV_RULES = ("qdq_conv", "qlinear_conv", "conv_integer")

# what every form's 8-bit operands can fail on: one override each
OPERAND_CASES = [
    (Reason.ACTIVATION_ZERO_POINT_NOT_CONSTANT, dict(xzp=INPUT)),
    (Reason.ACTIVATION_NOT_8BIT, dict(x=as_type(np.int16), xzp=as_type(np.int16))),
    (Reason.ASYMMETRIC_ACTIVATION, dict(xzp=np.uint8(3))),
    (Reason.WEIGHT_NOT_CONSTANT, dict(w=INPUT)),
    (Reason.WEIGHT_NOT_INT8, dict(w=as_type(np.uint8), wzp=as_type(np.uint8))),
    (Reason.WEIGHT_ZERO_POINT_NONZERO, dict(wzp=lambda zp: zp + 2)),
]
CONV_CASES = [
    (Reason.CONV_RANK, dict(x=lambda x: np.zeros((1, 3, 5, 5, 5), x.dtype), w=np.zeros((4, 3, 1, 1, 1), np.int8))),
    (Reason.AUTO_PAD, dict(attrs={"auto_pad": "SAME_UPPER"})),
]
NOT_2D = dict(w=np.zeros((2, 3, 4), np.int8))
INT8_ACTIVATION = dict(x=as_type(np.int8), xzp=np.int8(0))


@dataclass
class Case:
    rule: str  # the rule that rejects, or "pass" for a rejection under the plan
    reason: Reason
    build: Callable[[], onnx.ModelProto]
    plan: dict = field(default_factory=lambda: {"multiplier": MASK})

    @property
    def id(self) -> str:
        return f"{self.rule}-{self.build().graph.node[-1].op_type}-{self.reason.code}"


def _cases() -> list[Case]:
    cases = []
    for rule, op_types in FORMS.items():
        shared = OPERAND_CASES + (CONV_CASES if rule in CONV_RULES else [])
        for op_type in op_types:
            for reason, overrides in shared:
                cases.append(Case(rule, reason, lambda t=op_type, o=overrides: build(t, **o)))
    qdq_only = [
        ("qdq_conv", "Conv"), ("qdq_matmul", "Gemm"), ("qdq_matmul", "MatMul"),
    ]
    for rule, op in qdq_only:
        cases += [
            Case(rule, Reason.FLOAT_ACTIVATION, lambda op=op: qdq(op, float_x=True)),
            Case(rule, Reason.FLOAT_WEIGHT, lambda op=op: qdq(op, float_w=True)),
            Case(rule, Reason.QDQ_SCALES_NOT_CONSTANT, lambda op=op: qdq(op, xs=INPUT)),
            Case(rule, Reason.DEQUANTIZED_NOT_FLOAT32, lambda op=op: qdq(op, xs=np.float16(0.05))),
            Case(rule, Reason.WEIGHT_SCALE_SHAPE, lambda op=op: qdq(op, ws=np.full(2, 0.01, np.float32))),
        ]
    cases += [
        Case("qdq_matmul", Reason.GEMM_ATTRIBUTES, lambda: qdq("Gemm", attrs={"alpha": 2.0})),
        Case("qdq_matmul", Reason.GEMM_ATTRIBUTES, lambda: qdq("Gemm", attrs={"transA": 1})),
        Case("qdq_matmul", Reason.WEIGHT_NOT_2D, lambda: qdq("Gemm", **NOT_2D)),
        Case("qdq_matmul", Reason.WEIGHT_NOT_2D, lambda: qdq("MatMul", **NOT_2D)),
        Case("qlinear_conv", Reason.SCALES_NOT_CONSTANT, lambda: qlinear("QLinearConv", ys=INPUT)),
        Case("qlinear_conv", Reason.BIAS_NOT_CONSTANT, lambda: qlinear("QLinearConv", bias=True, b=INPUT)),
        Case("qlinear_matmul", Reason.SCALES_NOT_CONSTANT, lambda: qlinear("QLinearMatMul", xs=INPUT)),
        Case("qlinear_matmul", Reason.WEIGHT_NOT_2D, lambda: qlinear("QLinearMatMul", **NOT_2D)),
        Case("matmul_integer", Reason.WEIGHT_NOT_2D, lambda: integer("MatMulInteger", **NOT_2D)),
        Case("qgemm", Reason.SCALES_NOT_CONSTANT, lambda: qgemm(xs=INPUT)),
        Case("qgemm", Reason.SCALES_NOT_CONSTANT, lambda: qgemm(ys=INPUT)),
        Case("qgemm", Reason.SCALES_NOT_CONSTANT, lambda: qgemm(yzp=INPUT)),
        Case("qgemm", Reason.WEIGHT_SCALE_SHAPE, lambda: qgemm(ws=np.full(2, 0.01, np.float32))),
        Case("qgemm", Reason.BIAS_NOT_CONSTANT, lambda: qgemm(bias=True, b=INPUT)),
        # C broadcast over columns, one value per row of the batch: no per-channel bias
        Case("qgemm", Reason.BIAS_SHAPE, lambda: qgemm(bias=True, x=np.zeros((2, 3), np.uint8),
                                                       b=np.zeros((2, 1), np.int32))),
        Case("qgemm", Reason.FLOAT_OUTPUT_SCALED, lambda: qgemm(y="scale_only")),
        Case("qgemm", Reason.GEMM_ATTRIBUTES, lambda: qgemm(attrs={"transA": 1}, x=np.zeros((3, 1), np.uint8))),
        Case("qgemm", Reason.WEIGHT_NOT_2D, lambda: qgemm(**NOT_2D)),
        # the rules accept these; the plan asks for what cannot be done bit-exactly
        Case("pass", Reason.INT32_OVERFLOW,  # max|LUT| 16384 x K 2^17 = 2^31
             lambda: integer("MatMulInteger", x=np.zeros((1, 1 << 17), np.uint8), w=np.ones((1 << 17, 1), np.int8))),
        Case("pass", Reason.NO_EXACT_DECOMPOSITION, lambda: qdq("Conv"),
             {"multiplier": "mitchell", "lowering": "decomposed"}),
        Case("pass", Reason.INT8_MASK_NEEDS_BITWISE, lambda: qdq("Conv", opset=13, **INT8_ACTIVATION),
             {"multiplier": "mul8s_1L2L", "lowering": "decomposed"}),  # auto takes the LUT op there
        Case("pass", Reason.IN_SUBGRAPH, lambda: in_subgraph(qdq("Conv"), "If")),
    ]
    return cases


CASES = _cases()


def test_every_reason_has_a_negative_test():
    assert {case.reason for case in CASES} == set(Reason)


@pytest.mark.parametrize("rule", RULES, ids=lambda r: r.name)
def test_every_reason_of_a_rule_has_a_negative_test(rule):
    assert {case.reason for case in CASES if case.rule == rule.name} == set(rule.reasons)


def test_every_reason_belongs_to_a_rule_or_the_pass():
    declared = {reason for rule in RULES for reason in rule.reasons} | set(ApproximationPass.reasons)
    assert declared == set(Reason)
    assert {case.reason for case in CASES if case.rule == "pass"} == set(ApproximationPass.reasons)


def _op(model: onnx.ModelProto) -> ir.Node:
    return next(n for n in ir.traversal.RecursiveGraphIterator(ir.from_proto(model).graph) if n.name == "op")


def _template(reason: Reason) -> re.Pattern:
    """The reason's message with each {field} matching any text."""
    return re.compile(re.sub(r"\\\{\w+\\\}", ".+", re.escape(reason.value)))


@pytest.mark.parametrize("rule, op_type", [(rule, t) for rule, types in FORMS.items() for t in types])
def test_minimal_graph_of_each_form_is_rewritten(rule, op_type):
    """The graphs below differ from these by one override: each rejection is that override's."""
    model = build(op_type)
    onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)  # a valid graph
    assert match(_op(model)).name == rule
    _, report = approximate(model, {"multiplier": MASK})
    assert [n.status for n in report.nodes] == ["rewritten"]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_rejection_skips_the_op_and_leaves_the_model_unchanged(case):
    model = case.build()
    node = _op(model)
    rule = match(node)
    verdict = rule.check(node)
    if case.rule == "pass":
        assert not isinstance(verdict, Rejection), verdict.message
    else:
        assert rule.name == case.rule and isinstance(verdict, Rejection) and verdict.reason is case.reason
    out, report = approximate(model, case.plan)
    (entry,) = report.nodes
    assert entry.status == "skipped" and entry.reason_code == case.reason.code
    assert _template(case.reason).fullmatch(entry.reason), entry.reason
    assert report.summary().get("rewritten", 0) == 0
    # unchanged but for the shapes inference and onnx_ir record (in an If / Loop body they are part of the node)
    assert list(out.graph.node) == list(ir.to_proto(ir.from_proto(onnx.shape_inference.infer_shapes(model))).graph.node)
    if not any(a.type == onnx.AttributeProto.GRAPH for n in model.graph.node for a in n.attribute):
        assert list(out.graph.node) == list(model.graph.node)
    assert list(out.graph.initializer) == list(model.graph.initializer)
    assert [o.domain for o in out.opset_import] == [o.domain for o in model.opset_import]


def test_each_op_type_has_one_rule():
    """`match` takes the first rule that matches: an op type claimed twice would hide one rule."""
    op_types = [t for rule in RULES for t in rule.pattern.op_types]
    assert len(op_types) == len(set(op_types))
    assert {rule.name: list(rule.pattern.op_types) for rule in RULES} == FORMS


@pytest.mark.parametrize("owner", ["If", "Loop"])
@pytest.mark.parametrize("op_type", ["Conv", "Gemm", "MatMul", "QLinearConv", "QLinearMatMul", "ConvInteger",
                                     "MatMulInteger", "QGemm"])
def test_ops_in_subgraphs_are_left_alone_with_the_owner_named(op_type, owner):
    model = in_subgraph(build(op_type), owner)
    onnx.checker.check_model(model, full_check=True)
    out, report = approximate(model, {"multiplier": "mul8s_1KVA", "lowering": "lut"})
    (entry,) = report.nodes
    assert entry.status == "skipped" and entry.reason_code == Reason.IN_SUBGRAPH.code
    owner_name = "branch" if owner == "If" else "loop"
    assert f"subgraph of {owner} node {owner_name}" in entry.reason
    assert [n.op_type for n in out.graph.node] == [owner]
    inner = list(ir.traversal.RecursiveGraphIterator(ir.from_proto(out).graph))
    assert [n.op_type for n in inner] == [n.op_type for n in ir.traversal.RecursiveGraphIterator(
        ir.from_proto(model).graph)] and not any(n.domain == "axmoe" for n in inner)
