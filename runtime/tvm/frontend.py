"""Relax import of axmoe ONNX models: TVM's ONNX frontend plus the project's converters.

TVM 0.27's `tvm.relax.frontend.onnx.from_onnx` has no hook for extra ops: its importer looks
operators up in the module-level `_get_convert_map()` and refuses custom domains. The one
extension point of this project is `ONNXImporter`, a subclass of TVM's importer whose map is
TVM's map updated with `CONVERTERS` (ours win where both have an op); nothing of TVM's is
copied or patched.

    mod = from_onnx(model, batch=4)          # IRModule "main"(input: float32[4, 3, 32, 32])
    mod = from_onnx(model)                   # symbolic batch, as the model declares it

Nodes outside the standard domain must be in the axmoe domain; any other custom op is refused
with its name, before conversion starts.
"""

from __future__ import annotations

import warnings
from contextlib import contextmanager

import onnx
from tvm import relax
from tvm.relax.frontend.onnx import onnx_frontend as tvm_onnx

from runtime.tvm import contrib_ops, converters, ort_fusions

AXMOE_DOMAIN = "axmoe"
STANDARD_DOMAINS = ("", "ai.onnx")

#: ONNX op type -> converter class (`OnnxOpConverter`), on top of TVM's map.
CONVERTERS = {
    "ApproxConvInteger": converters.ApproxConvInteger,
    "ApproxMatMulInteger": converters.ApproxMatMulInteger,
    "ConvInteger": converters.ConvInteger,
    "MatMulInteger": converters.MatMulInteger,
    "QLinearConv": converters.QLinearConv,
    "QLinearMatMul": converters.QLinearMatMul,
    "Expand": converters.Expand,
    **contrib_ops.CONVERTERS,
}
AXMOE_OPS = ("ApproxConvInteger", "ApproxMatMulInteger")


class UnsupportedModelError(ValueError):
    """The model uses ops or inputs this importer cannot convert (names them)."""


def convert_map() -> dict:
    return {**tvm_onnx._get_convert_map(), **CONVERTERS}


class ONNXImporter(tvm_onnx.ONNXGraphImporter):
    """TVM's ONNX graph importer with `CONVERTERS` in its operator map."""

    def _check_for_unsupported_ops(self, graph: onnx.GraphProto):
        known = convert_map()
        missing = sorted({n.op_type for n in graph.node
                          if n.op_type not in known and n.op_type not in ("Constant", "If")})
        if missing:
            raise UnsupportedModelError(f"operators not supported by the TVM import: {', '.join(missing)}")

    def _convert_operator(self, op_name: str, inputs, attrs: dict, opset: int):
        converter = convert_map().get(op_name)
        if converter is None:
            raise UnsupportedModelError(f"operator {op_name} is not supported by the TVM import")
        sym = converter.get_converter(opset)(self.bb, inputs, attrs, [self._nodes, self._params])
        if isinstance(sym, relax.Expr):
            sym = self.bb.normalize(sym)
        return sym


def _check_domains(model: onnx.ModelProto) -> None:
    foreign = sorted({f"{n.domain}.{n.op_type}" for n in model.graph.node
                      if n.domain not in STANDARD_DOMAINS and n.domain != AXMOE_DOMAIN
                      and (n.domain, n.op_type) not in ort_fusions.FUSED})
    if foreign:
        raise UnsupportedModelError(f"custom operators outside the axmoe domain: {', '.join(foreign)}")
    unknown = sorted({n.op_type for n in model.graph.node if n.domain == AXMOE_DOMAIN and n.op_type not in AXMOE_OPS})
    if unknown:
        raise UnsupportedModelError(f"axmoe operators the TVM import does not lower: {', '.join(unknown)}")


def _opset(model: onnx.ModelProto) -> int:
    for entry in model.opset_import:
        if entry.domain in STANDARD_DOMAINS:
            return entry.version
    return 1


@contextmanager
def _kernel_option(kernel: str):
    previous = converters.OPTIONS.kernel
    converters.OPTIONS.kernel = kernel
    try:
        yield
    finally:
        converters.OPTIONS.kernel = previous


def integer_form(model: onnx.ModelProto) -> onnx.ModelProto:
    """`model` with every int8 Conv / Gemm / MatMul still in QDQ form (DequantizeLinear ->
    op -> QuantizeLinear: the exact model, a mask multiplier's decomposed lowering, layers a
    plan kept exact) rewritten by the approximation pass with the exact multiplier's LUT.

    onnxruntime fuses those groups into integer kernels (QLinearConv, QGemm, ...): int32
    accumulation, then y = saturate(round_half_even(float32(acc + bias) * (s_x s_w / s_y)) + z_y).
    TVM's importer would instead run a float32 conv of the dequantized operands, which rounds
    differently. The pass emits exactly onnxruntime's integer form (it is tested to leave
    outputs identical with the exact LUT), and the converters compute the exact LUT as one
    integer dot product, so this costs nothing at run time. Anything the pass skips (float
    operands, asymmetric zero points) stays as it is.
    """
    from multipliers import exact
    from passes.approximate import approximate

    rewritten, _ = approximate(model, {"multiplier": exact().name, "lowering": "lut"}, rewrite_exact=True)
    return rewritten


def from_onnx(model: onnx.ModelProto, batch: int | None = None, kernel: str = "auto"):
    """Relax IRModule of `model` (a single float or integer input with a leading batch axis).

    QDQ groups are first put in onnxruntime's integer form (`integer_form`), then fused as
    onnxruntime fuses them (`ort_fusions.apply`).
    batch: fix the leading dimension of every graph input (None keeps it symbolic).
    kernel: product form of the axmoe ops, "auto" (exact decomposition where the LUT has one)
        or "lut" (table lookups everywhere).
    The target matters for the kernels chosen: call inside `with tvm.target.Target(...)`.
    """
    if kernel not in ("auto", "lut"):
        raise ValueError(f"kernel must be 'auto' or 'lut', got {kernel!r}")
    if model.ir_version < 3:
        raise UnsupportedModelError(f"ONNX IR version {model.ir_version} is too old")
    _check_domains(model)
    model = ort_fusions.apply(integer_form(model))
    _check_domains(model)
    initializers = {t.name for t in model.graph.initializer}
    shapes = {}
    for value in model.graph.input:
        if value.name in initializers:
            continue
        dims = value.type.tensor_type.shape.dim
        if batch is not None and dims:
            shapes[value.name] = [batch] + [d.dim_value if d.HasField("dim_value") else d.dim_param for d in dims[1:]]
    importer = ONNXImporter(shapes, {}, keep_params_in_input=False, sanitize=True)
    with _kernel_option(kernel), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TVM warns on every renamed input and symbolic dim
        return importer.from_onnx(model.graph, _opset(model))
