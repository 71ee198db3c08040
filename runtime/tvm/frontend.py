"""Relax import of axmoe ONNX models: TVM's ONNX frontend plus the project's converters.

TVM 0.27's `tvm.relax.frontend.onnx.from_onnx` has no hook for extra ops: its importer looks
operators up in the module-level `_get_convert_map()` and refuses custom domains. The one
extension point of this project is `ONNXImporter`, a subclass of TVM's importer whose map is
TVM's map updated with `CONVERTERS` (ours win where both have an op); nothing of TVM's is
copied or patched. The importer holds the import's `LoweringConfig` and hands it to the
converters that take one (`converters.ConfiguredConverter`).

Before the import the model gets onnxruntime's fused nodes (`ort_fusions.apply`): every
int8 Conv / Gemm / MatMul group still in QDQ form (DequantizeLinear -> op -> QuantizeLinear)
that onnxruntime runs as an integer kernel (QLinearConv, QLinearMatMul, com.microsoft.QGemm)
becomes that kernel here too, so TVM computes integer products and onnxruntime's
requantization where onnxruntime does, instead of a float32 op on the dequantized operands.

    mod = from_onnx(model, batch=4)          # IRModule "main"(input: float32[4, 3, 32, 32])
    mod = from_onnx(model)                   # symbolic batch, as the model declares it

Nodes outside the standard domain must be in the axmoe domain; any other custom op is refused
with its name, before conversion starts.
"""

from __future__ import annotations

import warnings

import onnx
from tvm import relax
from tvm.relax.frontend.onnx import onnx_frontend as tvm_onnx

from modelfile.ops import APPROX_CONV_INTEGER, APPROX_MATMUL_INTEGER, DOMAIN
from runtime.tvm import contrib_ops, converters, ort_fusions
from runtime.tvm.config import LoweringConfig

STANDARD_DOMAINS = ("", "ai.onnx")

#: ONNX op type -> converter class (`OnnxOpConverter`), on top of TVM's map.
CONVERTERS = {
    APPROX_CONV_INTEGER: converters.ApproxConvInteger,
    APPROX_MATMUL_INTEGER: converters.ApproxMatMulInteger,
    "ConvInteger": converters.ConvInteger,
    "MatMulInteger": converters.MatMulInteger,
    "QLinearConv": converters.QLinearConv,
    "QLinearMatMul": converters.QLinearMatMul,
    "Expand": converters.Expand,
    **contrib_ops.CONVERTERS,
}
#: the axmoe ops the import lowers
AXMOE_OPS = (APPROX_CONV_INTEGER, APPROX_MATMUL_INTEGER)


class UnsupportedModelError(ValueError):
    """The model uses ops or inputs this importer cannot convert (names them)."""


def convert_map() -> dict:
    return {**tvm_onnx._get_convert_map(), **CONVERTERS}


class ONNXImporter(tvm_onnx.ONNXGraphImporter):
    """TVM's ONNX graph importer with `CONVERTERS` in its operator map and one
    `LoweringConfig` for the converters that read it."""

    def __init__(self, shape_dict, dtype_dict, config: LoweringConfig, **kwargs):
        super().__init__(shape_dict, dtype_dict, **kwargs)
        self.config = config

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
        impl = converter.get_converter(opset)
        if issubclass(converter, converters.ConfiguredConverter):
            sym = impl(self.bb, inputs, attrs, [self._nodes, self._params], self.config)
        else:  # TVM's converters and ours alike take (bb, inputs, attrs, params)
            sym = impl(self.bb, inputs, attrs, [self._nodes, self._params])
        if isinstance(sym, relax.Expr):
            sym = self.bb.normalize(sym)
        return sym


def _check_domains(model: onnx.ModelProto) -> None:
    foreign = sorted({f"{n.domain}.{n.op_type}" for n in model.graph.node
                      if n.domain not in STANDARD_DOMAINS and n.domain != DOMAIN
                      and (n.domain, n.op_type) not in ort_fusions.FUSED})
    if foreign:
        raise UnsupportedModelError(f"custom operators outside the axmoe domain: {', '.join(foreign)}")
    unknown = sorted({n.op_type for n in model.graph.node if n.domain == DOMAIN and n.op_type not in AXMOE_OPS})
    if unknown:
        raise UnsupportedModelError(f"axmoe operators the TVM import does not lower: {', '.join(unknown)}")


def _opset(model: onnx.ModelProto) -> int:
    for entry in model.opset_import:
        if entry.domain in STANDARD_DOMAINS:
            return entry.version
    return 1


def from_onnx(model: onnx.ModelProto, batch: int | None = None, kernel: str = "auto"):
    """Relax IRModule of `model` (a single float or integer input with a leading batch axis).

    The groups onnxruntime fuses are fused the same way first (`ort_fusions.apply`).
    batch: fix the leading dimension of every graph input (None keeps it symbolic).
    kernel: product form of the axmoe ops, "auto" (exact decomposition where the LUT has one)
        or "lut" (table lookups everywhere): the `LoweringConfig` of this import.
    The target matters for the kernels chosen: call inside `with tvm.target.Target(...)`.
    """
    config = LoweringConfig(kernel=kernel)
    if model.ir_version < 3:
        raise UnsupportedModelError(f"ONNX IR version {model.ir_version} is too old")
    _check_domains(model)
    model = ort_fusions.apply(model)
    _check_domains(model)
    initializers = {t.name for t in model.graph.initializer}
    shapes = {}
    for value in model.graph.input:
        if value.name in initializers:
            continue
        dims = value.type.tensor_type.shape.dim
        if batch is not None and dims:
            shapes[value.name] = [batch] + [d.dim_value if d.HasField("dim_value") else d.dim_param for d in dims[1:]]
    importer = ONNXImporter(shapes, {}, config, keep_params_in_input=False, sanitize=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TVM warns on every renamed input and symbolic dim
        return importer.from_onnx(model.graph, _opset(model))
