"""`python -m passes.approximate`: rewrite every int8 Conv/Gemm/MatMul of a quantized ONNX
model so its products go through an approximate multiplier.

    python -m passes.approximate IN.onnx OUT.onnx --multiplier mul8s_1L2L
    python -m passes.approximate IN.onnx OUT.onnx --plan plan.yaml --report report.json

Lowerings (per op): `decomposed` (standard ONNX ops, from the multiplier's exact
decomposition), `lut` (axmoe.ApproxConvInteger / ApproxMatMulInteger with the LUT as a
shared initializer), or `auto`, which picks per op the fastest bit-exact option measured on
x86 with onnxruntime (BENCHMARKS.md):

    exact multiplier                       -> op left as it is (identical outputs)
    operand-mask multiplier (1 term)       -> decomposed: masked operands, the op stays a fused
                                              QLinearConv / QLinearMatMul (<= 1.25x)
    correction terms, MatMul/Gemm          -> decomposed: MatMulInteger u8 x s8 runs 60-136 GMAC/s
    correction terms, Conv                 -> lut: ConvInteger runs only 2.5-14 GMAC/s, the
                                              custom op's masked-dot-product fast path is faster
    no exact decomposition (Mitchell, ...) -> lut

Every candidate (every node a rule of `passes.rules` matches) is reported: rewritten
(multiplier, lowering, terms, MACs) or skipped with the reason and its code
(`passes.reasons`); `--strict` turns any skip into an error. A rewrite whose worst case
max|LUT| x K could overflow int32 is refused.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir
from onnx_ir.passes import InPlacePass, PassResult
from onnx_ir.passes.common import RemoveUnusedNodesPass

from modelfile import metadata
from modelfile.ops import DOMAIN, VERSION, register_schemas
from multipliers import Multiplier
from passes.candidates import IntegerOp
from passes.lowering import MaskUnsupported
from passes.plan import Assignment, Plan, PlanError, assign, load_plan, plan_from_dict
from passes.reasons import Reason, Rejection, reject
from passes.rules import Rule, find_candidates, mask_term

INT32_LIMIT = 1 << 31


class ApproximationError(ValueError):
    pass


@dataclass
class NodeReport:
    node: str
    op_type: str
    status: str  # rewritten | exact | skipped
    reason: str = ""
    reason_code: str | None = None  # `Reason.code` of a skip
    multiplier: str | None = None
    lowering: str | None = None
    terms: int | None = None
    reduction: int | None = None  # K, products per output
    macs_per_row: int | None = None  # per batch row (image / routed row), when shapes are known
    rule: str | None = None

    def to_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if v is not None and v != ""}


@dataclass
class Report:
    nodes: list[NodeReport] = field(default_factory=list)
    plan: dict = field(default_factory=dict)

    @property
    def skipped(self) -> list[NodeReport]:
        return [n for n in self.nodes if n.status == "skipped"]

    def summary(self) -> dict:
        counts = {}
        for n in self.nodes:
            counts[n.status] = counts.get(n.status, 0) + 1
        lowerings = {}
        for n in self.nodes:
            if n.status == "rewritten":
                lowerings[n.lowering] = lowerings.get(n.lowering, 0) + 1
        return {"candidates": len(self.nodes), **counts, "lowerings": lowerings}

    def to_dict(self) -> dict:
        return {"summary": self.summary(), "plan": self.plan, "nodes": [n.to_dict() for n in self.nodes]}


def choose_lowering(op: IntegerOp, mult: Multiplier, requested: str) -> tuple[str, str] | Rejection:
    """(lowering, why) for `op`, or why the op cannot take the `requested` lowering."""
    dec = mult.decomposition
    if requested == "lut":
        return "lut", "requested"
    single = mask_term(dec) is not None
    if requested == "decomposed":
        if not dec.exact:
            return reject(op.node, Reason.NO_EXACT_DECOMPOSITION, multiplier=mult.name, why=dec.reason)
        if not single and op.x_zero_point != 128:
            return reject(op.node, Reason.CORRECTION_TERMS_NEED_UINT8)
        return "decomposed", "requested"
    if single:
        return "decomposed", "auto: operand masks keep the fused int8 kernel"
    if dec.exact and op.kind == "matmul" and op.x_zero_point == 128:
        return "decomposed", "auto: MatMulInteger carries correction terms fast"
    return "lut", "auto: custom op (fast path or LUT)"


def _macs_per_row(op: IntegerOp) -> int | None:
    shape = op.node.outputs[0].shape
    if shape is None or len(shape) < 2:
        return None
    dims = [d for d in list(shape)[1:]]
    if not all(isinstance(d, int) for d in dims):
        return None
    return int(np.prod(dims)) * op.reduction


class ApproximationPass(InPlacePass):
    """Rewrites the approximable ops of a model under a `Plan` (see module docstring)."""

    #: why an op the rules accept can still be left as it is, under a given plan
    reasons = (Reason.INT32_OVERFLOW, Reason.NO_EXACT_DECOMPOSITION, Reason.CORRECTION_TERMS_NEED_UINT8,
               Reason.INT8_MASK_NEEDS_BITWISE)

    def __init__(self, plan: Plan):
        super().__init__()
        self.plan = plan
        self.report = Report(plan=plan.to_dict())
        self.assignment: dict[str, dict] = {}

    def call(self, model: ir.Model) -> PassResult:
        graph = model.graph
        self.opset = model.opset_imports.get("", 1)
        found = find_candidates(graph)
        ops = [c for _, c in found if isinstance(c, IntegerOp)]
        assignments = assign(self.plan, ops)
        modified = False
        for rule, cand in found:
            if isinstance(cand, Rejection):
                self.report.nodes.append(NodeReport(cand.name, cand.node.op_type, "skipped", reason=cand.message,
                                                    reason_code=cand.code))
                continue
            modified |= self._rewrite(graph, rule, cand, assignments[cand.name])
        if modified:
            if DOMAIN not in model.opset_imports:
                model.opset_imports[DOMAIN] = VERSION
            RemoveUnusedNodesPass()(model)
        return PassResult(model, modified)

    def _rewrite(self, graph: ir.Graph, rule: Rule, op: IntegerOp, assignment: Assignment) -> bool:
        mult = assignment.multiplier
        name = op.name  # before the rewrite renames anything
        entry = NodeReport(name, op.node.op_type, "", multiplier=mult.name, reduction=op.reduction,
                           macs_per_row=_macs_per_row(op), rule=assignment.reason)
        self.report.nodes.append(entry)
        self.assignment[name] = {"multiplier": mult.name, "rule": assignment.reason}
        lut = mult.lut if self.plan.operand_order == "xw" else np.ascontiguousarray(mult.lut.T)
        table = mult if self.plan.operand_order == "xw" else Multiplier(f"{mult.name}^T", lut, mult.kind)
        if table.is_exact:
            entry.status, entry.lowering, entry.reason = "exact", "none", "exact multiplier: op unchanged"
            self.assignment[name]["lowering"] = "none"
            return False
        worst = int(np.abs(lut).max()) * op.reduction
        if worst >= INT32_LIMIT:
            return self._skip(entry, reject(op.node, Reason.INT32_OVERFLOW, max_abs=int(np.abs(lut).max()),
                                            reduction=op.reduction))
        chosen = choose_lowering(op, table, assignment.lowering)
        if isinstance(chosen, Rejection):
            return self._skip(entry, chosen)
        lowering, why = chosen
        try:
            entry.terms = rule.rewrite(graph, op, table, lowering, bitwise=self.opset >= 18)
        except MaskUnsupported:
            return self._skip(entry, reject(op.node, Reason.INT8_MASK_NEEDS_BITWISE))
        entry.status, entry.lowering, entry.reason = "rewritten", lowering, why
        self.assignment[name]["lowering"] = lowering
        return True

    @staticmethod
    def _skip(entry: NodeReport, rejection: Rejection) -> bool:
        entry.status, entry.reason, entry.reason_code = "skipped", rejection.message, rejection.code
        return False


def approximate(model: onnx.ModelProto | str | Path, plan: Plan | dict) -> tuple[onnx.ModelProto, Report]:
    """Rewrite `model` under `plan`; returns the new model and the report."""
    if isinstance(plan, dict):
        plan = plan_from_dict(plan)
    proto = model if isinstance(model, onnx.ModelProto) else onnx.load(str(model))
    try:
        proto = onnx.shape_inference.infer_shapes(proto)
    except Exception:  # shapes only feed the MAC counts of the report
        pass
    ir_model = ir.from_proto(proto)
    approx_pass = ApproximationPass(plan)
    approx_pass(ir_model)
    out = ir.to_proto(ir_model)
    out.ir_version = proto.ir_version
    metadata.write(out, {metadata.PLAN: plan.to_dict(), metadata.ASSIGNMENT: approx_pass.assignment})
    register_schemas()
    return out, approx_pass.report


# ----------------------------------------------------------------------------------- CLI
def create_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m passes.approximate",
        description="Rewrite the int8 Conv/Gemm/MatMul of a quantized ONNX model (QDQ, QLinear* or "
                    "*Integer form) to use an approximate 8x8 multiplier.")
    p.add_argument("input", metavar="IN.onnx")
    p.add_argument("output", metavar="OUT.onnx")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--multiplier", metavar="NAME",
                       help="one multiplier for every op (catalog name, family spec, .npy LUT, or 'exact')")
    which.add_argument("--plan", metavar="PLAN.yaml", help="per-layer / per-expert plan (see passes.plan)")
    p.add_argument("--lowering", choices=["auto", "lut", "decomposed"],
                   help="override the plan's lowering (default auto)")
    p.add_argument("--strict", action="store_true", help="fail if any candidate op is skipped")
    p.add_argument("--report", metavar="REPORT.json", help="write the per-node report as JSON")
    return p


def run(args) -> Report:
    if args.plan:
        plan_dict = dict(load_plan(args.plan).source)
    else:
        plan_dict = {"multiplier": args.multiplier}
    if args.lowering:
        plan_dict["lowering"] = args.lowering
    plan = plan_from_dict(plan_dict)
    src = Path(args.input)
    if not src.is_file():
        raise ApproximationError(f"{src}: no such file")
    try:
        model = onnx.load(str(src))
    except Exception:
        raise ApproximationError(f"{src}: not an ONNX model") from None
    out, report = approximate(model, plan)
    rewritten = [n for n in report.nodes if n.status in ("rewritten", "exact")]
    if not report.nodes:
        raise ApproximationError(f"{src}: no Conv/Gemm/MatMul found")
    if not rewritten:
        raise ApproximationError(f"{src}: not a quantized model: no int8 Conv/Gemm/MatMul "
                                 f"({report.nodes[0].node}: {report.nodes[0].reason})")
    if args.strict and report.skipped:
        first = report.skipped[0]
        raise ApproximationError(f"--strict: {len(report.skipped)} op(s) skipped, e.g. {first.node}: {first.reason}")
    if args.report:
        Path(args.report).write_text(json.dumps(report.to_dict(), indent=2))
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    onnx.save(out, str(args.output))
    summary = report.summary()
    print(f"{args.output}: {summary.get('rewritten', 0)} rewritten "
          f"({', '.join(f'{k} {v}' for k, v in summary['lowerings'].items()) or 'none'}), "
          f"{summary.get('exact', 0)} kept exact, {summary.get('skipped', 0)} skipped")
    for node in report.skipped[:10]:
        print(f"  skipped {node.node}: {node.reason}")
    return report


def main(argv=None) -> int:
    args = create_args_parser().parse_args(argv)
    try:
        run(args)
    except (ApproximationError, PlanError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
