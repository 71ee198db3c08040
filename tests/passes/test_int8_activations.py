"""Both activation encodings in every lowering: uint8 with zero point 128 and int8 with zero
point 0 (onnxruntime's quantizer with QInt8 activations), for Conv (1-D / 2-D, strides, pads,
dilations, groups), Gemm (transB, int32 bias) and batch-broadcast MatMul, in QDQ, QOperator
and Integer forms, with per-tensor and per-channel weight scales.

Each one-op graph is lowered by its rule's `rewrite` (`lut` and `decomposed`, the lowering
itself, whatever `auto` would choose) and run in onnxruntime with the axmoe op library; the
output must equal, bit for bit, a numpy reference built from `multipliers.oracle` on the same
integers, the two lowerings must agree with each other, and with the exact multiplier (the LUT,
and an exact multi-term decomposition that goes through every term construction) the rewritten
model must compute what the input model computes in onnxruntime's own integer kernels.
"""

from dataclasses import dataclass, replace

import numpy as np
import onnx
import onnx_ir as ir
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper
from onnx_ir.passes.common import RemoveUnusedNodesPass

import multipliers
from modelfile.ops import DOMAIN, VERSION
from multipliers import oracle
from multipliers.decompose import Decomposition, Term
from multipliers.lut import apply_mask
from passes.candidates import IntegerOp
from passes.approximate import approximate
from passes.lowering import MaskUnsupported
from passes.rules import find_candidates, mask_term
from runtime.ort import session

ENCODINGS = {"uint8": (np.uint8, 128), "int8": (np.int8, 0)}
ONNX_TYPES = {np.dtype(np.uint8): TensorProto.UINT8, np.dtype(np.int8): TensorProto.INT8}
CATALOG = list(multipliers.catalog())
# partial-product family members whose correction terms mask the activation's sign bit
PP = ["pp:i+j<4,77", "pp:70,71"]
MULTS = CATALOG + PP
FORMS = ["qdq_conv", "qlinear_conv", "conv_integer", "qdq_gemm", "qdq_matmul", "qlinear_matmul", "matmul_integer"]
CONV_FORMS = ("qdq_conv", "qlinear_conv", "conv_integer")

# a * b, exactly, as five terms: the low-bit activation field (0x7F, 0x0C: shifted), the sign
# bit alone (0x80), weight fields with and without the sign bit, term weights of either sign
EXACT_SPLIT = Decomposition(exact=True, terms=(
    Term(1, 0x7F, 0x0F), Term(1, 0x7F, 0xF0), Term(1, 0x80, 0xFF), Term(3, 0x0C, 0x06), Term(-3, 0x0C, 0x06)))


@dataclass(frozen=True)
class Table:
    """What a rule's rewrite reads of a multiplier, with a decomposition of our choosing."""

    name: str
    lut: np.ndarray
    decomposition: Decomposition


def test_exact_split_is_the_exact_product():
    a, b = np.meshgrid(np.arange(-128, 128), np.arange(-128, 128), indexing="ij")
    assert np.array_equal(EXACT_SPLIT.evaluate(a, b), a * b)
    assert mask_term(EXACT_SPLIT) is None  # so the terms path, not the operand masks, lowers it


@dataclass
class Case:
    """A one-op graph over integers the test chose, and the numpy reference of its output."""

    form: str
    encoding: str
    x: np.ndarray  # stored activation (graph input)
    w: np.ndarray  # int8, canonical: conv (M, C/g, *k), matmul (K, N)
    attrs: dict  # conv attributes; {"transB": 1} for Gemm
    opset: int = 18
    x_scale: float = 0.05
    w_scale: np.ndarray | None = None  # (1,) or (M,) / (N,)
    bias: np.ndarray | None = None  # int32 per output channel
    y: tuple | None = None  # (scale, zero point, numpy dtype) of a quantized output

    @property
    def conv(self) -> bool:
        return self.form in CONV_FORMS

    @property
    def x_zero_point(self) -> int:
        return ENCODINGS[self.encoding][1]

    @property
    def channel_shape(self) -> tuple:
        return (1, -1) + (1,) * (self.x.ndim - 2) if self.conv else (-1,)

    def model(self) -> onnx.ModelProto:
        x_np = np.dtype(ENCODINGS[self.encoding][0])
        c = {"xs": np.float32(self.x_scale), "xzp": np.array(self.x_zero_point, x_np), "wzp": np.int8(0)}
        if self.w_scale is not None:
            c["ws"] = self.w_scale if self.w_scale.size > 1 else np.float32(self.w_scale[0])
            if self.w_scale.size > 1:
                c["wzp"] = np.zeros(self.w_scale.size, np.int8)
        if self.y is not None:
            c["ys"], c["yzp"] = np.float32(self.y[0]), np.array(self.y[1], self.y[2])
        weight = self.w.T.copy() if self.attrs.get("transB") else self.w
        c["w"] = weight
        out_type = TensorProto.INT32
        nodes = []
        if self.form.startswith("qdq"):
            op_type = {"qdq_conv": "Conv", "qdq_gemm": "Gemm", "qdq_matmul": "MatMul"}[self.form]
            axis = 0 if self.conv or self.attrs.get("transB") else 1  # the output channels
            nodes += [helper.make_node("DequantizeLinear", ["x", "xs", "xzp"], ["xd"]),
                      helper.make_node("DequantizeLinear", ["w", "ws", "wzp"], ["wd"], axis=axis)]
            inputs = ["xd", "wd"]
            if self.bias is not None:
                c["b"] = self.bias
                c["bs"] = (np.float32(self.x_scale) * self.w_scale).astype(np.float32)
                nodes.append(helper.make_node("DequantizeLinear", ["b", "bs"], ["bd"], axis=0))
                inputs.append("bd")
            out = "yf" if self.y is not None else "y"
            nodes.append(helper.make_node(op_type, inputs, [out], name="op", **self.attrs))
            out_type = TensorProto.FLOAT
            if self.y is not None:
                nodes.append(helper.make_node("QuantizeLinear", ["yf", "ys", "yzp"], ["y"]))
        elif self.form.startswith("qlinear"):
            op_type = "QLinearConv" if self.conv else "QLinearMatMul"
            names = ["x", "xs", "xzp", "w", "ws", "wzp", "ys", "yzp"]
            if self.bias is not None:
                c["b"] = self.bias
                names.append("b")
            nodes.append(helper.make_node(op_type, names, ["y"], name="op", **self.attrs))
        else:
            op_type = "ConvInteger" if self.conv else "MatMulInteger"
            nodes.append(helper.make_node(op_type, ["x", "w", "xzp", "wzp"], ["y"], name="op", **self.attrs))
        if self.y is not None:
            out_type = ONNX_TYPES[np.dtype(self.y[2])]
        used = {name for node in nodes for name in node.input}
        inits = [numpy_helper.from_array(np.asarray(v), k) for k, v in c.items() if k in used]
        out_shape = [f"y{i}" for i in range(self.x.ndim)]  # the output's rank is the input's
        x_info = helper.make_tensor_value_info("x", ONNX_TYPES[self.x.dtype], self.x.shape)
        y_info = helper.make_tensor_value_info("y", out_type, out_shape)
        graph = helper.make_graph(nodes, "g", [x_info], [y_info], inits)
        return helper.make_model(graph, opset_imports=[helper.make_opsetid("", self.opset)], ir_version=8)

    def expected(self, lut: np.ndarray) -> np.ndarray:
        """The output with every product a lookup in `lut`, requantized as the module says."""
        a = self.x.astype(np.int64) - self.x_zero_point
        if self.conv:
            acc = oracle.lut_conv(a, self.w, lut, strides=self.attrs["strides"], pads=self.attrs["pads"],
                                  dilations=self.attrs["dilations"], group=self.attrs["group"])
        else:
            acc = oracle.lut_matmul(a, self.w, lut)
        if self.form.endswith("integer"):
            return acc
        if self.bias is not None:
            acc = oracle.wrap_int32(acc.astype(np.int64) + self.bias.reshape(self.channel_shape))
        product = (np.float32(self.x_scale) * self.w_scale.astype(np.float32)).astype(np.float32)
        if self.y is None:  # QDQ with a float output
            return acc.astype(np.float32) * product.reshape(self.channel_shape)
        scale, zero_point, dtype = self.y
        multiplier = (product / np.float32(scale)).astype(np.float32).reshape(self.channel_shape)
        info = np.iinfo(dtype)
        q = np.round(acc.astype(np.float32) * multiplier) + zero_point
        return np.clip(q, info.min, info.max).astype(dtype)


def rewrite(model: onnx.ModelProto, table, lowering: str) -> onnx.ModelProto:
    """`model` with its one candidate lowered by `lowering` through its rule, as the pass does."""
    ir_model = ir.from_proto(model)
    ((rule, op),) = find_candidates(ir_model.graph)
    assert isinstance(op, IntegerOp), op.message
    rule.rewrite(ir_model.graph, op, table, lowering, bitwise=ir_model.opset_imports[""] >= 18)
    ir_model.opset_imports[DOMAIN] = VERSION
    RemoveUnusedNodesPass()(ir_model)
    return ir.to_proto(ir_model)


def run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    return session(model.SerializeToString(), threads=1).run(None, {"x": x})[0]


def check(case: Case, name: str) -> None:
    """Both lowerings of `name` equal the oracle, and each other, on `case`."""
    mult = multipliers.get(name)
    model = case.model()
    onnx.checker.check_model(model, full_check=True)
    expected = case.expected(mult.lut)
    lut = run(rewrite(model, mult, "lut"), case.x)
    assert lut.dtype == expected.dtype and np.array_equal(lut, expected)
    term = mask_term(mult.decomposition)
    if case.encoding == "int8" and case.opset < 18 and term is not None and term.mask_a != 0xFF:
        with pytest.raises(MaskUnsupported):  # masking int8 bytes in place needs BitwiseAnd
            rewrite(model, mult, "decomposed")
        return
    decomposed = run(rewrite(model, mult, "decomposed"), case.x)
    if term is not None and case.form.startswith("qdq") and case.y is None:
        # operand masks keep the op: a QDQ op with a float output stays a float Conv / Gemm /
        # MatMul of the dequantized masked operands, which onnxruntime sums in float, as it
        # does the input model's; it is then the input model on the masked operands
        masked = replace(case, x=(apply_mask(case.x.astype(np.int64) - case.x_zero_point, term.mask_a)
                                  + case.x_zero_point).astype(case.x.dtype),
                         w=apply_mask(case.w, term.mask_b).astype(np.int8))
        assert np.array_equal(decomposed, run(masked.model(), masked.x))
        np.testing.assert_allclose(decomposed, lut, rtol=1e-5, atol=1e-5 * float(np.abs(lut).max(initial=1)))
        return
    assert decomposed.dtype == expected.dtype and np.array_equal(decomposed, expected)
    assert np.array_equal(decomposed, lut)


# ------------------------------------------------------------------------------- the cases
@st.composite
def cases(draw, forms=tuple(FORMS), quantized_output=None) -> Case:
    form = draw(st.sampled_from(forms))
    encoding = draw(st.sampled_from(sorted(ENCODINGS)))
    opset = draw(st.sampled_from([13, 17, 18]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    dtype, _ = ENCODINGS[encoding]
    info = np.iinfo(dtype)
    attrs = {}
    if form in CONV_FORMS:
        spatial = draw(st.sampled_from([1, 2]))
        group = draw(st.sampled_from([1, 2, 3]))
        cg, mg = draw(st.integers(1, 3)), draw(st.integers(1, 3))
        k = [draw(st.integers(1, 3)) for _ in range(spatial)]
        dil = [draw(st.integers(1, 2)) for _ in range(spatial)]
        strides = [draw(st.integers(1, 3)) for _ in range(spatial)]
        pads = [draw(st.integers(0, 2)) for _ in range(2 * spatial)]
        size = [draw(st.integers(dil[i] * (k[i] - 1) + 1, 8)) for i in range(spatial)]
        x = rng.integers(info.min, info.max + 1, (draw(st.integers(1, 2)), group * cg, *size)).astype(dtype)
        w = rng.integers(-128, 128, (group * mg, cg, *k)).astype(np.int8)
        attrs = dict(strides=strides, pads=pads, dilations=dil, group=group, kernel_shape=k)
        channels = group * mg
    else:
        m, k, n = draw(st.integers(1, 5)), draw(st.integers(1, 40)), draw(st.integers(1, 6))
        batch = draw(st.sampled_from([(), (2,), (2, 3)])) if form != "qdq_gemm" else ()
        x = rng.integers(info.min, info.max + 1, batch + (m, k)).astype(dtype)
        w = rng.integers(-128, 128, (k, n)).astype(np.int8)
        if form == "qdq_gemm" and draw(st.booleans()):
            attrs = {"transB": 1}
        channels = n
    case = Case(form, encoding, x, w, attrs, opset=opset)
    if form.endswith("integer"):
        return case
    per_channel = draw(st.booleans())
    case.w_scale = rng.uniform(0.002, 0.02, channels if per_channel else 1).astype(np.float32)
    if form != "qdq_matmul" and form != "qlinear_matmul" and draw(st.booleans()):
        case.bias = rng.integers(-3000, 3000, channels).astype(np.int32)
    if form.startswith("qlinear") or (quantized_output if quantized_output is not None else draw(st.booleans())):
        # onnxruntime's QLinear kernels write the activation's dtype; a QDQ output may differ
        y_dtype = dtype if form.startswith("qlinear") else ENCODINGS[draw(st.sampled_from(sorted(ENCODINGS)))][0]
        y_info = np.iinfo(y_dtype)
        case.y = (float(rng.uniform(0.05, 0.5)), int(rng.integers(y_info.min, y_info.max + 1)), y_dtype)
    return case


SETTINGS = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(case=cases(), name=st.sampled_from(MULTS))
def test_both_encodings_equal_the_oracle_in_every_lowering(case, name):
    check(case, name)


@pytest.mark.parametrize("encoding", sorted(ENCODINGS))
@pytest.mark.parametrize("name", MULTS)
def test_every_catalog_multiplier_in_every_form(name, encoding):
    rng = np.random.default_rng(3)
    dtype, _ = ENCODINGS[encoding]
    info = np.iinfo(dtype)
    conv_x = rng.integers(info.min, info.max + 1, (2, 4, 6, 6)).astype(dtype)
    conv_w = rng.integers(-128, 128, (6, 2, 3, 3)).astype(np.int8)
    conv_attrs = dict(strides=[2, 1], pads=[1, 0, 1, 2], dilations=[1, 1], group=2, kernel_shape=[3, 3])
    mm_x = rng.integers(info.min, info.max + 1, (2, 3, 24)).astype(dtype)
    mm_w = rng.integers(-128, 128, (24, 5)).astype(np.int8)
    per_channel = rng.uniform(0.002, 0.02, 6).astype(np.float32)
    y = (0.25, ENCODINGS[encoding][1] + 3, dtype)
    for form in FORMS:
        if form in CONV_FORMS:
            case = Case(form, encoding, conv_x, conv_w, conv_attrs)
        else:
            x = mm_x[0] if form == "qdq_gemm" else mm_x
            case = Case(form, encoding, x, mm_w, {"transB": 1} if form == "qdq_gemm" else {})
        if not form.endswith("integer"):
            case.w_scale = per_channel[:case.w.shape[0] if case.conv else case.w.shape[1]]
            case.y = y
            case.bias = rng.integers(-3000, 3000, case.w_scale.size).astype(np.int32) \
                if form not in ("qdq_matmul", "qlinear_matmul") else None
        check(case, name)


@SETTINGS
@given(case=cases(quantized_output=True))
def test_exact_multiplier_computes_what_the_input_model_computes(case):
    """onnxruntime runs the input model in its integer kernels (QDQ groups fused into QLinearConv,
    QLinearMatMul, QGemm): the exact LUT, and the exact decomposition in five terms, give its
    output bit for bit, in both encodings."""
    model = case.model()
    reference = run(model, case.x)
    exact = multipliers.exact()
    assert np.array_equal(reference, case.expected(exact.lut))
    split = Table("exact-split", exact.lut, EXACT_SPLIT)
    for table, lowering in [(exact, "lut"), (split, "decomposed")]:
        out = run(rewrite(model, table, lowering), case.x)
        assert out.dtype == reference.dtype and np.array_equal(out, reference), lowering


@pytest.mark.parametrize("opset", [13, 17, 18])
def test_int8_terms_read_one_uint8_re_encoding(opset):
    """The int8 activation is re-encoded once per op, whatever the number of terms: Cast + Add
    from opset 14, DequantizeLinear -> QuantizeLinear below; uint8 activations are read as they are."""
    rng = np.random.default_rng(0)
    mult = multipliers.get("mul8s_1KVA")  # five terms
    for encoding in ENCODINGS:
        dtype, _ = ENCODINGS[encoding]
        x = rng.integers(np.iinfo(dtype).min, np.iinfo(dtype).max + 1, (1, 8)).astype(dtype)
        case = Case("matmul_integer", encoding, x, rng.integers(-128, 128, (8, 3)).astype(np.int8), {}, opset=opset)
        out = rewrite(case.model(), mult, "decomposed")
        readers = [n.op_type for n in out.graph.node if "x" in n.input]
        if encoding == "uint8":
            assert "MatMulInteger" in readers and "Cast" not in readers and "DequantizeLinear" not in readers
        else:
            assert readers == (["Cast"] if opset >= 14 else ["DequantizeLinear"])
        onnx.checker.check_model(out, full_check=True)
        assert np.array_equal(run(out, x), case.expected(mult.lut))


@pytest.mark.parametrize("form", FORMS)
def test_the_pass_lowers_int8_correction_terms_as_requested(form):
    """`--lowering decomposed` with a correction-term multiplier rewrites int8 activations too."""
    rng = np.random.default_rng(5)
    if form in CONV_FORMS:
        x, w = rng.integers(-128, 128, (1, 3, 5, 5)), rng.integers(-128, 128, (4, 3, 3, 3))
        attrs = dict(strides=[1, 1], pads=[1, 1, 1, 1], dilations=[1, 1], group=1, kernel_shape=[3, 3])
    else:
        x, w, attrs = rng.integers(-128, 128, (2, 6)), rng.integers(-128, 128, (6, 4)), {}
    case = Case(form, "int8", x.astype(np.int8), w.astype(np.int8), attrs)
    if not form.endswith("integer"):
        case.w_scale, case.y = np.full(4, 0.01, np.float32), (0.5, 0, np.int8)
    model = case.model()
    out_dims = model.graph.output[0].type.tensor_type.shape.dim
    for dim, size in zip(out_dims, case.expected(multipliers.exact().lut).shape):  # the output's shape, concrete
        dim.dim_value = size
    out, report = approximate(model, {"multiplier": "mul8s_1KVA", "lowering": "decomposed"})
    assert [(n.status, n.lowering, n.terms) for n in report.nodes] == [("rewritten", "decomposed", 5)]
    assert np.array_equal(run(out, case.x), case.expected(multipliers.get("mul8s_1KVA").lut))


@pytest.mark.parametrize("opset, lowering", [(17, "lut"), (18, "decomposed")])
def test_auto_masks_int8_activations_where_the_opset_can(opset, lowering):
    """An operand-mask multiplier on int8 activations: `auto` masks in place where BitwiseAnd
    exists (opset 18) and takes the LUT op below it, instead of refusing the node."""
    rng = np.random.default_rng(6)
    x, w = rng.integers(-128, 128, (1, 3, 5, 5)).astype(np.int8), rng.integers(-127, 128, (4, 3, 3, 3)).astype(np.int8)
    attrs = dict(strides=[1, 1], pads=[1, 1, 1, 1], dilations=[1, 1], group=1, kernel_shape=[3, 3])
    case = Case("qdq_conv", "int8", x, w, attrs, opset=opset)
    case.w_scale, case.y = np.full(4, 0.01, np.float32), (0.5, 0, np.int8)
    out, report = approximate(case.model(), {"multiplier": "mul8s_1L2L"})
    assert [(n.status, n.lowering) for n in report.nodes] == [("rewritten", lowering)]
    assert np.array_equal(run(out, case.x), case.expected(multipliers.get("mul8s_1L2L").lut))
