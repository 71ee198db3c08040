"""com.microsoft.QGemm, onnxruntime's QOperator Gemm (`passes.rules.qgemm`): uint8 (zero point
128) and int8 (zero point 0) activations, transB 0 / 1, per-tensor and per-column weight
scales, with and without the int32 C, quantized (uint8 / int8) and float outputs, alpha.

onnxruntime's own QGemm kernel is the reference: the one-op graph lowered with the exact
multiplier (its LUT, and an exact decomposition in five terms) gives its outputs bit for bit;
with an approximate multiplier the `lut` and `decomposed` lowerings equal each other and the
numpy oracle (`multipliers.oracle`) on the same integers. Last, models onnxruntime's quantizer
writes (`quantize_static`, QOperator) from a small Linear network: every QGemm is rewritten,
exactly with the exact multiplier.
"""

from __future__ import annotations

import io
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper
from onnx_ir.passes.common import RemoveUnusedNodesPass

import multipliers
from modelfile.ops import DOMAIN, VERSION
from multipliers import oracle
from multipliers.decompose import Decomposition, Term
from passes import validity
from passes.approximate import approximate
from passes.candidates import IntegerOp
from passes.reasons import Rejection
from passes.rules import find_candidates
from runtime.ort import session
from passes import calibration
from passes.compensate import compensate, uniform_assignment

ENCODINGS = {"uint8": (np.uint8, 128), "int8": (np.int8, 0)}
ONNX_TYPES = {np.dtype(np.uint8): TensorProto.UINT8, np.dtype(np.int8): TensorProto.INT8}
MS = "com.microsoft"
PP = "mul8s_1KVA"  # partial products with correction terms: the decomposed lowering computes five terms
MASK = "mul8s_1L2L"  # operand masks: the decomposed lowering keeps the QGemm, operands masked
# a * b, exactly, in five terms (low-bit and sign-bit activation fields, weights of either sign)
EXACT_SPLIT = Decomposition(exact=True, terms=(
    Term(1, 0x7F, 0x0F), Term(1, 0x7F, 0xF0), Term(1, 0x80, 0xFF), Term(3, 0x0C, 0x06), Term(-3, 0x0C, 0x06)))
SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@dataclass(frozen=True)
class Table:
    """What a rule's rewrite reads of a multiplier, with a decomposition of our choosing."""

    name: str
    lut: np.ndarray
    decomposition: Decomposition


@dataclass
class Case:
    """One QGemm over integers the test chose; `w` canonical (K, N), stored transposed under transB."""

    encoding: str
    x: np.ndarray  # (M, K) stored activation, the graph input
    w: np.ndarray  # int8 (K, N)
    w_scale: np.ndarray  # (1,) or (N,)
    trans_b: bool = False
    bias: np.ndarray | None = None  # int32: (), (N,) or (1, N)
    y: tuple | None = None  # (scale, zero point, numpy dtype); None: float output
    y_scale: bool = True  # False with `y`: a zero point without a scale (requantized with the scale alone)
    alpha: float = 1.0
    x_scale: float = 0.05
    weight_as_constant_node: bool = False  # B a Constant node's output rather than an initializer

    @property
    def x_zero_point(self) -> int:
        return ENCODINGS[self.encoding][1]

    def model(self) -> onnx.ModelProto:
        x_np = np.dtype(ENCODINGS[self.encoding][0])
        stored = np.ascontiguousarray(self.w.T) if self.trans_b else self.w
        per_column = self.w_scale.size > 1
        c = {"xs": np.float32(self.x_scale), "xzp": np.array(self.x_zero_point, x_np),
             "ws": self.w_scale if per_column else np.float32(self.w_scale[0]),
             "wzp": np.zeros(self.w_scale.size, np.int8) if per_column else np.int8(0)}
        names = ["x", "xs", "xzp", "w", "ws", "wzp", "", "", ""]
        nodes = []
        if self.weight_as_constant_node:
            nodes.append(helper.make_node("Constant", [], ["w"], value=numpy_helper.from_array(stored, "w_value")))
        else:
            c["w"] = stored
        if self.bias is not None:
            c["b"], names[6] = self.bias, "b"
        out_type = TensorProto.FLOAT
        if self.y is not None:
            c["yzp"], names[8] = np.array(self.y[1], self.y[2]), "yzp"
            if self.y_scale:
                c["ys"], names[7] = np.float32(self.y[0]), "ys"
            out_type = ONNX_TYPES[np.dtype(self.y[2])]
        while names[-1] == "":
            names.pop()
        nodes.append(helper.make_node("QGemm", names, ["y"], name="op", domain=MS, alpha=self.alpha,
                                      transB=int(self.trans_b)))
        inits = [numpy_helper.from_array(np.asarray(v), k) for k, v in c.items()]
        graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", ONNX_TYPES[self.x.dtype],
                                                                              self.x.shape)],
                                  [helper.make_tensor_value_info("y", out_type, [self.x.shape[0], self.w.shape[1]])],
                                  inits)
        return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid(MS, 1)],
                                 ir_version=8)

    def accumulator(self, lut: np.ndarray) -> np.ndarray:
        """int32 sum of the LUT products, plus C: what the kernel scales."""
        acc = oracle.lut_matmul(self.x.astype(np.int64) - self.x_zero_point, self.w, lut)
        if self.bias is not None:
            acc = oracle.wrap_int32(acc.astype(np.int64) + self.bias.reshape(-1))
        return acc

    def expected(self, lut: np.ndarray) -> np.ndarray:
        """onnxruntime's QGemm on the LUT's products: scale float32((alpha sa) sb[n]) / sy."""
        acc = self.accumulator(lut)
        scale = ((np.float32(self.alpha) * np.float32(self.x_scale)) * self.w_scale.astype(np.float32))
        scale = scale.astype(np.float32)
        if self.y is None:
            return acc.astype(np.float32) * scale
        y_scale, zero_point, dtype = self.y
        if self.y_scale:
            scale = (scale / np.float32(y_scale)).astype(np.float32)
        info = np.iinfo(dtype)
        return np.clip(np.round(acc.astype(np.float32) * scale) + zero_point, info.min, info.max).astype(dtype)


def rewrite(model: onnx.ModelProto, table, lowering: str) -> onnx.ModelProto:
    """`model` with every candidate lowered by `lowering` through its rule, as the pass does."""
    ir_model = ir.from_proto(model)
    graph = ir_model.graph
    for rule, op in find_candidates(graph):
        op = rule.check(op.node)  # an earlier rewrite may have replaced its activation
        assert isinstance(op, IntegerOp), op.message
        rule.rewrite(graph, op, table, lowering, bitwise=ir_model.opset_imports[""] >= 18)
    ir_model.opset_imports[DOMAIN] = VERSION
    RemoveUnusedNodesPass()(ir_model)
    out = ir.to_proto(ir_model)
    validity.check(out, model)  # the pass's post-condition
    return out


def run(model: onnx.ModelProto, feeds: dict) -> np.ndarray:
    return session(model.SerializeToString(), threads=1).run(None, feeds)[0]


def op_types(model: onnx.ModelProto) -> list[str]:
    return [n.op_type for n in model.graph.node]


@st.composite
def cases(draw, encodings=tuple(ENCODINGS)) -> Case:
    encoding = draw(st.sampled_from(sorted(encodings)))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    dtype, _ = ENCODINGS[encoding]
    info = np.iinfo(dtype)
    m, k, n = draw(st.integers(1, 6)), draw(st.integers(1, 48)), draw(st.integers(1, 7))
    x = rng.integers(info.min, info.max + 1, (m, k)).astype(dtype)
    w = rng.integers(-128, 128, (k, n)).astype(np.int8)
    w_scale = rng.uniform(0.002, 0.02, n if draw(st.booleans()) else 1).astype(np.float32)
    case = Case(encoding, x, w, w_scale, trans_b=draw(st.booleans()), alpha=draw(st.sampled_from([1.0, 1.0, 0.3])))
    bias = draw(st.sampled_from(["none", "vector", "row", "scalar"]))
    if bias != "none":
        values = rng.integers(-3000, 3000, n).astype(np.int32)
        case.bias = {"vector": values, "row": values.reshape(1, n), "scalar": values[0]}[bias]
    output = draw(st.sampled_from(["quantized", "quantized", "float", "zero_point_only"]))
    if output != "float":
        y_dtype = dtype  # onnxruntime's QGemm writes the activation's dtype
        y_info = np.iinfo(y_dtype)
        # outputs of some tens of steps: rounding is exercised, not only saturation
        y_scale = float(np.float32(case.x_scale * w_scale.mean() * 60 * np.sqrt(k) * rng.uniform(0.5, 2)))
        case.y = (y_scale, int(rng.integers(y_info.min, y_info.max + 1)), y_dtype)
        case.y_scale = output == "quantized"
    return case


# ------------------------------------------------------------------------- one-op graphs
@SETTINGS
@given(case=cases())
def test_exact_multiplier_gives_onnxruntimes_qgemm_bit_for_bit(case):
    """The input model runs in onnxruntime's QGemm kernel; rewritten with the exact LUT (lut)
    and the exact decomposition in five terms (decomposed), it gives the same outputs."""
    model = case.model()
    onnx.checker.check_model(model, full_check=True)
    reference = run(model, {"x": case.x})
    exact = multipliers.exact()
    assert reference.dtype == case.expected(exact.lut).dtype and np.array_equal(reference, case.expected(exact.lut))
    for table, lowering in [(exact, "lut"), (Table("exact-split", exact.lut, EXACT_SPLIT), "decomposed")]:
        out = rewrite(model, table, lowering)
        assert "QGemm" not in op_types(out), lowering
        got = run(out, {"x": case.x})
        assert got.dtype == reference.dtype and np.array_equal(got, reference), lowering


@SETTINGS
@given(case=cases())
def test_pp_multiplier_lut_equals_decomposed_equals_the_oracle(case):
    mult = multipliers.get(PP)
    a = case.x.astype(np.int64) - case.x_zero_point
    assert np.array_equal(oracle.lut_matmul(a, case.w, mult.lut), oracle.decomposed_matmul(a, case.w,
                                                                                            mult.decomposition))
    model = case.model()
    expected = case.expected(mult.lut)
    outs = {}
    for lowering in ("lut", "decomposed"):
        out = rewrite(model, mult, lowering)
        outs[lowering] = run(out, {"x": case.x})
        assert outs[lowering].dtype == expected.dtype and np.array_equal(outs[lowering], expected), lowering
    assert np.array_equal(outs["lut"], outs["decomposed"])


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=cases(), constant_node=st.booleans())
def test_operand_masks_keep_the_qgemm(case, constant_node):
    """An operand-mask multiplier under `decomposed` keeps onnxruntime's QGemm kernel and masks
    its operands: the weight in its stored (transposed or not) layout, wherever it comes from."""
    case.weight_as_constant_node = constant_node
    mult = multipliers.get(MASK)
    model = case.model()
    out = rewrite(model, mult, "decomposed")
    assert "QGemm" in op_types(out) and not any(n.domain == DOMAIN for n in out.graph.node)
    expected = case.expected(mult.lut)
    got = run(out, {"x": case.x})
    assert got.dtype == expected.dtype and np.array_equal(got, expected)


@pytest.mark.parametrize("encoding", sorted(ENCODINGS))
@pytest.mark.parametrize("name", list(multipliers.catalog()))
def test_every_catalog_multiplier(name, encoding):
    """lut equals the oracle for every catalog multiplier, and so does decomposed where the
    multiplier has an exact decomposition; transB, per-column scales, C."""
    rng = np.random.default_rng(11)
    dtype, _ = ENCODINGS[encoding]
    info = np.iinfo(dtype)
    case = Case(encoding, rng.integers(info.min, info.max + 1, (3, 24)).astype(dtype),
                rng.integers(-128, 128, (24, 5)).astype(np.int8), rng.uniform(0.002, 0.02, 5).astype(np.float32),
                trans_b=True, bias=rng.integers(-3000, 3000, 5).astype(np.int32),
                y=(0.3, ENCODINGS[encoding][1] + 3, dtype))
    mult = multipliers.get(name)
    model = case.model()
    expected = case.expected(mult.lut)
    assert np.array_equal(run(rewrite(model, mult, "lut"), {"x": case.x}), expected)
    if mult.decomposition.exact:
        assert np.array_equal(run(rewrite(model, mult, "decomposed"), {"x": case.x}), expected)


@pytest.mark.parametrize("encoding", sorted(ENCODINGS))
def test_the_pass_rewrites_and_reports_the_qgemm(encoding):
    rng = np.random.default_rng(5)
    dtype, _ = ENCODINGS[encoding]
    info = np.iinfo(dtype)
    case = Case(encoding, rng.integers(info.min, info.max + 1, (4, 16)).astype(dtype),
                rng.integers(-128, 128, (16, 6)).astype(np.int8), np.full(1, 0.01, np.float32), trans_b=True,
                bias=rng.integers(-3000, 3000, 6).astype(np.int32), y=(0.4, ENCODINGS[encoding][1], dtype))
    model = case.model()
    out, report = approximate(model, {"multiplier": PP, "lowering": "lut"})
    (entry,) = report.nodes
    assert (entry.status, entry.op_type, entry.lowering, entry.reduction) == ("rewritten", "QGemm", "lut", 16)
    assert "QGemm" not in op_types(out)
    assert np.array_equal(run(out, {"x": case.x}), case.expected(multipliers.get(PP).lut))
    out, report = approximate(model, {"multiplier": "exact"})
    assert [n.status for n in report.nodes] == ["exact"] and op_types(out) == ["QGemm"]


# ---------------------------------------------------------------------- the quantizer's QGemm
class _Linear(torch.nn.Module):
    """Linear -> ReLU -> Linear: onnxruntime's QOperator quantizer makes two QGemm of it."""

    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = torch.nn.Linear(12, 16), torch.nn.Linear(16, 5)

    def forward(self, x):
        return self.fc2(self.fc1(x).relu())


def _samples(count: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.standard_normal((3, 12)).astype(np.float32) for _ in range(count)]


@pytest.fixture(scope="module")
def quantized_linear():
    """activation type, per_channel -> the Linear network quantized by `quantize_static` (QOperator)."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    logging.getLogger().setLevel(logging.ERROR)  # the quantizer's advice on pre-processing
    torch.manual_seed(0)
    buffer = io.BytesIO()
    torch.onnx.export(_Linear().eval(), (torch.from_numpy(_samples(1, 0)[0]),), buffer, dynamo=False,
                      opset_version=17, input_names=["input"], output_names=["output"])

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.samples = iter(_samples(8, 1))

        def get_next(self):
            sample = next(self.samples, None)
            return None if sample is None else {"input": sample}

    models = {}
    with tempfile.TemporaryDirectory() as folder:
        src = Path(folder) / "float.onnx"
        src.write_bytes(buffer.getvalue())
        for activation in ("QUInt8", "QInt8"):
            for per_channel in (False, True):
                dst = Path(folder) / f"{activation}-{per_channel}.onnx"
                quantize_static(str(src), str(dst), Reader(), quant_format=QuantFormat.QOperator,
                                activation_type=QuantType[activation], weight_type=QuantType.QInt8,
                                per_channel=per_channel,
                                extra_options={"ActivationSymmetric": True, "WeightSymmetric": True})
                models[activation, per_channel] = onnx.load(str(dst))
    return models


@pytest.mark.parametrize("per_channel", [False, True], ids=["per_tensor", "per_channel"])
@pytest.mark.parametrize("activation", ["QUInt8", "QInt8"])
def test_quantizer_qgemm_is_rewritten_exactly(quantized_linear, activation, per_channel):
    model = quantized_linear[activation, per_channel]
    gemms = [n for n in model.graph.node if n.op_type == "QGemm" and n.domain == MS]
    assert len(gemms) == 2 and all(helper.get_attribute_value(a) == 1 for n in gemms for a in n.attribute
                                   if a.name == "transB")
    candidates = find_candidates(ir.from_proto(model).graph)
    assert [rule.name for rule, _ in candidates] == ["qgemm", "qgemm"]
    assert not any(isinstance(op, Rejection) for _, op in candidates)
    xs = _samples(3, 7)
    base = [run(model, {"input": x}) for x in xs]
    exact = multipliers.exact()
    for table, lowering in [(exact, "lut"), (Table("exact-split", exact.lut, EXACT_SPLIT), "decomposed")]:
        out = rewrite(model, table, lowering)
        assert "QGemm" not in op_types(out)
        assert all(np.array_equal(run(out, {"input": x}), b) for x, b in zip(xs, base, strict=True)), lowering
    mult = multipliers.get(PP)
    outs = {lowering: [run(rewrite(model, mult, lowering), {"input": x}) for x in xs]
            for lowering in ("lut", "decomposed")}
    assert all(np.array_equal(a, b) for a, b in zip(outs["lut"], outs["decomposed"], strict=True))
    assert not all(np.array_equal(a, b) for a, b in zip(outs["lut"], base, strict=True))  # something approximated
    out, report = approximate(model, {"multiplier": PP, "lowering": "lut"})
    assert [(n.op_type, n.status) for n in report.nodes] == [("QGemm", "rewritten")] * 2
    assert all(np.array_equal(run(out, {"input": x}), y) for x, y in zip(xs, outs["lut"], strict=True))
@pytest.mark.parametrize("activation", ["QUInt8", "QInt8"])
def test_compensation_tunes_the_qgemm_in_its_stored_layout(quantized_linear, activation):
    """`passes.compensate` writes a tuned QGemm weight back transposed (transB) and its bias
    correction into C: the compensated model runs and its approximate outputs come closer to
    the exact ones than without compensation."""
    model = quantized_linear[activation, True]
    stats = calibration.collect(model, np.concatenate(_samples(16, 3)), batch=3)
    compensated, report = compensate(model, uniform_assignment(model, PP), stats, "weights+bias")
    assert [(n.status, n.bias_site) for n in report.nodes] == [("compensated", "bias input")] * 2
    assert any(n.weights_changed for n in report.nodes)
    stored = {t.name: t.dims for t in model.graph.initializer}
    for before, after in zip(model.graph.node, compensated.graph.node, strict=True):
        if after.op_type == "QGemm":  # B keeps its (N, K) layout
            assert [t.dims for t in compensated.graph.initializer if t.name == after.input[3]] == \
                [stored[before.input[3]]]
    xs = _samples(4, 9)
    base = np.concatenate([run(model, {"input": x}) for x in xs])
    plain, _ = approximate(model, {"multiplier": PP, "lowering": "lut"})
    tuned, _ = approximate(compensated, {"multiplier": PP, "lowering": "lut"})
    error = [np.abs(np.concatenate([run(m, {"input": x}) for x in xs]) - base).mean() for m in (plain, tuned)]
    assert error[1] < error[0]
