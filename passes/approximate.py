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
                                              QLinearConv / QLinearMatMul (<= 1.25x); lut for
                                              int8 activations below opset 18 (no BitwiseAnd)
    correction terms, MatMul/Gemm, uint8   -> decomposed: MatMulInteger u8 x s8 runs 60-136 GMAC/s
    correction terms, Conv                 -> lut: ConvInteger runs only 2.5-14 GMAC/s, the
                                              custom op's masked-dot-product fast path is faster
    no exact decomposition (Mitchell, ...) -> lut

Every candidate (every node a rule of `passes.rules` matches) is reported: rewritten
(multiplier, lowering, terms, MACs) or skipped with the reason and its code
(`passes.reasons`); `--strict` turns any skip into an error. A rewrite whose worst case
max|LUT| x K could overflow int32 is refused. The written model passes `passes.validity`
(onnx.checker with full check, strict shape inference, every graph output kept) or the pass
fails: it never returns an invalid model.

`--compensate MODE` (or `compensate:` in a plan, per override too) first tunes the int8
weights and biases of every op for the multiplier the plan gives it (`passes.compensate`,
statistics of the exact model on `--calibration DATASET[:N]` images, default the model's own
dataset, 512 train images): zero runtime cost, the rewrite is the same. `linear` also fits a
term in the sum of each output's activations: the rewrite of every op whose
`axmoe.compensation` record has coefficients (`linear`) adds it in its lowering (one
reduction per output pixel, reported as `linear_additions` per batch row, 0 multiplies).
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
from modelfile.ops import DOMAIN, LINEAR_FRACTION_BITS, VERSION, register_schemas
from multipliers import Multiplier
from passes import model_io, validity
from passes.calibration import DEFAULT_IMAGES, CompensationError, parse_spec
from passes.candidates import IntegerOp
from passes.lowering import MaskUnsupported
from passes.plan import COMPENSATE_MODES, Assignment, Plan, PlanError, assign, load_plan, plan_from_dict
from passes.reasons import Reason, Rejection, reject
from passes.rules import Rule, find_candidates, mask_term, subgraph_matches

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
    linear_additions: int | None = None  # the linear compensation term's reduction, per batch row (0 multiplies)
    rule: str | None = None

    def to_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if v is not None and v != ""}


@dataclass
class Report:
    nodes: list[NodeReport] = field(default_factory=list)
    plan: dict = field(default_factory=dict)
    compensation: dict | None = None  # `CompensationReport.to_dict()`, when the plan compensates

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
        out = {"summary": self.summary(), "plan": self.plan, "nodes": [n.to_dict() for n in self.nodes]}
        if self.compensation is not None:
            out["compensation"] = self.compensation
        return out


def product_table(mult: Multiplier, operand_order: str) -> Multiplier:
    """`mult` as the table the rewrite (and compensation) index lut[a + 128, w + 128], a the
    activation: the plan's operand_order "wx" (lut[weight, activation]) transposes it."""
    if operand_order == "xw":
        return mult
    return Multiplier(f"{mult.name}^T", np.ascontiguousarray(mult.lut.T), mult.kind)


def choose_lowering(op: IntegerOp, mult: Multiplier, requested: str,
                    bitwise: bool = True) -> tuple[str, str] | Rejection:
    """(lowering, why) for `op`, or why the op cannot take the `requested` lowering.
    `bitwise`: the model's opset has BitwiseAnd (18+), which masking int8 activations needs."""
    dec = mult.decomposition
    if requested == "lut":
        return "lut", "requested"
    single = mask_term(dec) is not None
    if requested == "decomposed":
        if not dec.exact:
            return reject(op.node, Reason.NO_EXACT_DECOMPOSITION, multiplier=mult.name, why=dec.reason)
        return "decomposed", "requested"
    if single and op.x_zero_point == 0 and not bitwise:
        return "lut", "auto: masking int8 activations in place needs BitwiseAnd (opset 18)"
    if single:
        return "decomposed", "auto: operand masks keep the fused int8 kernel"
    if dec.exact and op.kind == "matmul" and op.x_zero_point == 128:
        return "decomposed", "auto: MatMulInteger carries correction terms fast"
    return "lut", "auto: custom op (fast path or LUT)"


def linear_worst_case(linear: np.ndarray | None, reduction: int) -> int:
    """Bound on |t| = |floor((g S + 2^(F-1)) / 2^F)| for |S| <= 128 K (the int32 check)."""
    if linear is None or not len(linear):
        return 0
    return -(-int(np.abs(linear).max()) * 128 * reduction // (1 << LINEAR_FRACTION_BITS)) + 1


def _linear_additions(op: IntegerOp, macs_per_row: int | None) -> int | None:
    """One sum of K activations per output pixel and group: macs_per_row x G / M."""
    if macs_per_row is None:
        return None
    group = int(op.attributes.get("group", 1)) if op.kind == "conv" else 1
    return macs_per_row * group // op.out_channels


def recorded_linear_terms(model: ir.Model) -> dict[str, tuple[str, np.ndarray]]:
    """node -> (multiplier it was fitted for, int64 g) from the model's axmoe.compensation record."""
    text = model.metadata_props.get(metadata.COMPENSATION.name)
    if not text:
        return {}
    try:
        record = metadata.COMPENSATION.decode(text)
    except ValueError as exc:
        raise ApproximationError(f"model metadata {metadata.COMPENSATION.name} is not JSON ({exc})") from None
    return {n["node"]: (n.get("multiplier"), np.asarray(n["linear"], np.int64))
            for n in record.get("nodes", []) if n.get("linear")}


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
    reasons = (Reason.INT32_OVERFLOW, Reason.NO_EXACT_DECOMPOSITION, Reason.INT8_MASK_NEEDS_BITWISE,
               Reason.IN_SUBGRAPH)

    def __init__(self, plan: Plan, assignments: dict[str, Assignment] | None = None):
        super().__init__()
        self.plan = plan
        self.assignments = assignments  # precomputed `assign` (compensation tuned for it), else computed here
        self.report = Report(plan=plan.to_dict())
        self.assignment: dict[str, dict] = {}

    def call(self, model: ir.Model) -> PassResult:
        graph = model.graph
        self.opset = model.opset_imports.get("", 1)
        self.linear = recorded_linear_terms(model)
        found = find_candidates(graph)
        ops = [c for _, c in found if isinstance(c, IntegerOp)]
        assignments = self.assignments if self.assignments is not None else assign(self.plan, ops)
        missing = [op.name for op in ops if op.name not in assignments]
        if missing:
            raise ApproximationError(f"{missing[0]}: no multiplier assigned "
                                     f"({len(missing)} op(s) not in the assignment)")
        modified = False
        for rule, cand in found:
            if isinstance(cand, IntegerOp):
                # an earlier rewrite may have replaced the values this op was read from (its
                # activation was that op's output): read the operands again from the graph as it is
                cand = rule.check(cand.node)
            if isinstance(cand, Rejection):
                self.report.nodes.append(NodeReport(cand.name, cand.node.op_type, "skipped", reason=cand.message,
                                                    reason_code=cand.code))
                continue
            modified |= self._rewrite(graph, rule, cand, assignments[cand.name])
        for _, node, owner, attribute in subgraph_matches(graph):  # If / Loop bodies are left alone
            left = reject(node, Reason.IN_SUBGRAPH, attribute=attribute, owner_type=owner.op_type,
                          owner=owner.name or owner.outputs[0].name)
            self.report.nodes.append(NodeReport(left.name, node.op_type, "skipped", reason=left.message,
                                                reason_code=left.code))
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
        table = product_table(mult, self.plan.operand_order)
        lut = table.lut
        if table.is_exact:
            entry.status, entry.lowering, entry.reason = "exact", "none", "exact multiplier: op unchanged"
            self.assignment[name]["lowering"] = "none"
            return False
        linear = None
        if name in self.linear:
            fitted_for, linear = self.linear[name]
            if fitted_for != table.name:
                raise ApproximationError(f"{name}: its linear compensation term was fitted for {fitted_for}, the plan "
                                         f"gives {table.name}; compensate for this plan (--compensate linear)")
        worst = int(np.abs(lut).max()) * op.reduction + linear_worst_case(linear, op.reduction)
        if worst >= INT32_LIMIT:
            return self._skip(entry, reject(op.node, Reason.INT32_OVERFLOW, max_abs=int(np.abs(lut).max()),
                                            reduction=op.reduction))
        chosen = choose_lowering(op, table, assignment.lowering, bitwise=self.opset >= 18)
        if isinstance(chosen, Rejection):
            return self._skip(entry, chosen)
        lowering, why = chosen
        try:
            entry.terms = rule.rewrite(graph, op, table, lowering, bitwise=self.opset >= 18, linear=linear)
        except MaskUnsupported:
            return self._skip(entry, reject(op.node, Reason.INT8_MASK_NEEDS_BITWISE))
        entry.status, entry.lowering, entry.reason = "rewritten", lowering, why
        self.assignment[name]["lowering"] = lowering
        if linear is not None:
            entry.linear_additions = _linear_additions(op, entry.macs_per_row)
            self.assignment[name]["linear"] = True
            if entry.linear_additions is not None:
                self.assignment[name]["linear_additions"] = entry.linear_additions
        return True

    @staticmethod
    def _skip(entry: NodeReport, rejection: Rejection) -> bool:
        entry.status, entry.reason, entry.reason_code = "skipped", rejection.message, rejection.code
        return False


def approximate(model: onnx.ModelProto | str | Path, plan: Plan | dict,
                calibration=None) -> tuple[onnx.ModelProto, Report]:
    """Rewrite `model` under `plan`; returns the new model and the report.

    A plan that compensates (`Plan.compensates`) first tunes the model's int8 weights and
    biases for the multiplier `assign` gives each op (`passes.compensate`), and the rewrite
    then uses that very assignment. The statistics come from `calibration`: an
    `ActivationStats`, preprocessed images (N, C, S, S), a "DATASET[:N]" spec or None (the
    model's own dataset, `passes.calibration.DEFAULT_IMAGES` train images); none are needed
    when every op to compensate is exact. An op the pass then leaves as it is (a skip) is
    compensated for nothing, so it is left uncompensated too. Raises CompensationError (one
    line) for unusable calibration data.
    """
    if isinstance(plan, dict):
        plan = plan_from_dict(plan)
    source = model if isinstance(model, onnx.ModelProto) else model_io.load(model)
    if not plan.compensates():
        ir_model, approx_pass = _run_pass(source, plan)
    else:
        stats, leave = None, {}
        while True:
            compensated, compensation, assignments, stats = _compensate(source, plan, calibration, stats, leave)
            ir_model, approx_pass = _run_pass(compensated, plan, assignments)
            skipped = {n.node: n for n in approx_pass.report.nodes if n.status == "skipped"}
            undo = {c.node: skipped[c.node].reason for c in compensation.nodes
                    if c.status == "compensated" and c.node in skipped}
            if not undo:
                break
            leave.update(undo)
        approx_pass.report.compensation = compensation.to_dict()
        for entry in compensation.nodes:
            if entry.status == "compensated":
                approx_pass.assignment[entry.node]["compensate"] = entry.mode or compensation.mode
    out = ir.to_proto(ir_model)
    out.ir_version = source.ir_version
    metadata.write(out, {metadata.PLAN: plan.to_dict(), metadata.ASSIGNMENT: approx_pass.assignment})
    register_schemas()
    try:  # the post-condition: the pass never hands back an invalid model
        validity.check(out, source)
    except validity.InvalidModelError as exc:
        raise ApproximationError(f"the rewritten model is invalid, so it is not written: {exc}") from None
    return out, approx_pass.report


def _run_pass(proto: onnx.ModelProto, plan: Plan, assignments: dict[str, Assignment] | None = None
              ) -> tuple[ir.Model, ApproximationPass]:
    try:
        proto = onnx.shape_inference.infer_shapes(proto)
    except Exception:  # shapes only feed the MAC counts of the report
        pass
    ir_model = ir.from_proto(proto)
    approx_pass = ApproximationPass(plan, assignments)
    approx_pass(ir_model)
    return ir_model, approx_pass


def _compensate(proto: onnx.ModelProto, plan: Plan, calibration, stats, leave: dict[str, str]):
    """(compensated model, its CompensationReport, the assignment it is tuned for, the
    statistics) of `approximate`; the ops in `leave` (name -> why) are not compensated.
    `stats`: those of an earlier call (collected once), or None."""
    from passes import calibration as calib
    from passes.compensate import compensate

    ops = [c for _, c in find_candidates(ir.from_proto(proto).graph) if isinstance(c, IntegerOp)]
    assignments = assign(plan, ops)  # the pass rewrites with these (ApproximationPass(plan, assignments))
    tables = {name: product_table(a.multiplier, plan.operand_order) for name, a in assignments.items()}
    modes = {name: "none" if name in leave else a.compensate for name, a in assignments.items()}
    if stats is None and any(modes[name] != "none" and not tables[name].is_exact for name in modes):
        linear = any(modes[name] == "linear" and not tables[name].is_exact for name in modes)
        pixels = calib.LINEAR_PIXELS if linear else 0
        stats = calibration if isinstance(calibration, calib.ActivationStats) else \
            calib.statistics(proto, calibration, pixels=pixels)
    out, report = compensate(proto, tables, stats, plan.compensate,
                             modes={name: mode for name, mode in modes.items() if mode != plan.compensate})
    for entry in report.nodes:
        if entry.node in leave:
            entry.status, entry.reason = "skipped", f"the pass leaves it as it is: {leave[entry.node]}"
    return out, report, assignments, stats


# ----------------------------------------------------------------------------------- CLI
#: skip reasons meaning the op is not an 8-bit integer product at all
NOT_INT8 = (Reason.FLOAT_ACTIVATION, Reason.FLOAT_WEIGHT, Reason.ACTIVATION_NOT_8BIT)
#: skip reasons of one lowering: the lowering that cannot carry the op, and what can
LOWERING_REFUSALS = {
    Reason.NO_EXACT_DECOMPOSITION: ("decomposed", "use --lowering lut or auto"),
    Reason.INT8_MASK_NEEDS_BITWISE: ("decomposed", "use --lowering lut, or convert the model to opset 18"),
}
#: skip reasons of the pass itself that no other lowering would avoid
NO_LOWERING_CAN = (Reason.INT32_OVERFLOW, Reason.IN_SUBGRAPH)
#: skipped nodes listed one by one on stdout (the --report JSON lists every node)
LISTED_SKIPS = 20


def create_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m passes.approximate",
        description="Rewrite the int8 Conv/Gemm/MatMul of a quantized ONNX model (QDQ, QLinear*, "
                    "com.microsoft.QGemm or *Integer form) to use an approximate 8x8 multiplier.")
    p.add_argument("input", metavar="IN.onnx")
    p.add_argument("output", metavar="OUT.onnx")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--multiplier", metavar="NAME",
                       help="one multiplier for every op (catalog name, family spec, .npy LUT, or 'exact')")
    which.add_argument("--plan", metavar="PLAN.yaml", help="per-layer / per-expert plan (see passes.plan)")
    p.add_argument("--lowering", choices=["auto", "lut", "decomposed"],
                   help="override the plan's lowering (default auto)")
    p.add_argument("--compensate", choices=COMPENSATE_MODES, metavar="MODE",
                   help="error compensation without retraining: "
                        f"{' | '.join(COMPENSATE_MODES)}; tunes the int8 weights (weights) "
                        "and/or int32 biases (bias) for each op's multiplier; linear adds a term in the sum of "
                        "each output's activations (one extra reduction per output pixel); overrides the plan's "
                        "compensate (default none)")
    p.add_argument("--calibration", metavar="DATASET[:N]",
                   help="images the compensation statistics come from (the exact int8 model run on them): "
                        f"default the model's axmoe.dataset, N = {DEFAULT_IMAGES}, train split")
    p.add_argument("--strict", action="store_true", help="fail if any candidate op is skipped")
    p.add_argument("--report", metavar="REPORT.json", help="write the per-node report as JSON")
    return p


def _code(node: NodeReport) -> Reason | None:
    return next((r for r in Reason if r.code == node.reason_code), None)


def explain_skips(report: Report, lowering: str | None = None) -> list[str]:
    """One line per kind of skip: how many ops, why, and what would rewrite them (the lowering
    that can, when only the requested one cannot); `lowering` is the --lowering asked for."""
    groups: dict[tuple, int] = {}
    for node in report.skipped:
        reason, why = _code(node), node.reason.split("; ")[0]  # the reason without its own advice
        if reason in LOWERING_REFUSALS:
            why = why.split(" (")[0]  # short: the node lines and the report carry the particulars
        groups[reason, why] = groups.get((reason, why), 0) + 1
    lines = []
    for (reason, why), n in groups.items():
        if reason in LOWERING_REFUSALS:
            refused, fix = LOWERING_REFUSALS[reason]
            label = f"--lowering {lowering}" if lowering == refused else f"the {refused} lowering"
            lines.append(f"{label}: {n} op(s) cannot take it ({why}): {fix}")
        elif reason in NOT_INT8:
            lines.append(f"{n} op(s) are not int8 products ({why}): left as they are")
        elif reason is Reason.INT32_OVERFLOW:
            lines.append(f"{n} op(s) cannot take this multiplier in any lowering ({why}): keep them exact "
                         f"(keep_exact in a plan) or choose a multiplier with smaller products")
        else:
            lines.append(f"{n} op(s) no lowering rewrites ({why}): left as they are")
    return lines


def _print_skips(report: Report, lowering: str | None) -> None:
    for node in report.skipped[:LISTED_SKIPS]:
        print(f"  skipped {node.node}: {node.reason}")
    if len(report.skipped) > LISTED_SKIPS:
        print(f"  ... {len(report.skipped) - LISTED_SKIPS} more skipped (--report REPORT.json lists every node)")
    for line in explain_skips(report, lowering):
        print(f"  {line}")


def _float_dtypes(model: onnx.ModelProto, names: set[str]) -> list[str]:
    """The float element types the nodes `names` compute in (from shape inference; best effort)."""
    try:
        model = onnx.shape_inference.infer_shapes(model)
    except Exception:  # the types only enrich an error message
        pass
    g = model.graph
    types = {v.name: v.type.tensor_type.elem_type for v in (*g.input, *g.value_info, *g.output)}
    types.update({t.name: t.data_type for t in g.initializer})
    found = set()
    for node in g.node:
        if (node.name or node.output[0]) in names:
            for name in node.input[:2]:
                if types.get(name):
                    dtype = onnx.TensorProto.DataType.Name(types[name]).lower()
                    found.add({"float": "float32", "double": "float64"}.get(dtype, dtype))
    return sorted(found)


def _refuse(src: Path, model: onnx.ModelProto, report: Report, lowering: str | None) -> ApproximationError:
    """The error for a model none of whose candidates was rewritten."""
    not_int8 = [n for n in report.skipped if _code(n) in NOT_INT8]
    if len(not_int8) == len(report.nodes):
        floats = {n.node for n in not_int8 if _code(n) in (Reason.FLOAT_ACTIVATION, Reason.FLOAT_WEIGHT)}
        dtypes = _float_dtypes(model, floats) if floats else []
        where = f" in {'/'.join(dtypes)}" if dtypes else ""
        first = not_int8[0]
        return ApproximationError(f"{src}: not a quantized model: no int8 Conv/Gemm/MatMul, {len(not_int8)} op(s)"
                                  f"{where} ({first.node}: {first.reason}); quantize it first, e.g. with "
                                  f"onnxruntime.quantization.quantize_static")
    int8 = Report([n for n in report.skipped if _code(n) not in NOT_INT8])
    print(f"{src}: {len(int8.nodes)} int8 op(s), none rewritten:")
    _print_skips(report, lowering)
    return ApproximationError(f"{src}: none of its {len(int8.nodes)} int8 Conv/Gemm/MatMul can be rewritten: "
                              + "; ".join(explain_skips(int8, lowering)))


def _write_report(args, report: Report) -> None:
    if not args.report:
        return
    path = Path(args.report)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(report.to_dict(), indent=2))
    except OSError as exc:
        raise ApproximationError(f"{path}: cannot write the report: {exc.strerror or exc}") from None


def run(args) -> Report:
    if args.plan:
        plan_dict = dict(load_plan(args.plan).source)
    else:
        plan_dict = {"multiplier": args.multiplier}
    if args.lowering:
        plan_dict["lowering"] = args.lowering
    compensate = getattr(args, "compensate", None)
    if compensate is not None and (compensate != "none" or "compensate" in plan_dict):
        plan_dict["compensate"] = compensate  # an explicit none on a plan without the key changes nothing
    plan = plan_from_dict(plan_dict)
    calibration = getattr(args, "calibration", None)
    if calibration is not None:
        if not plan.compensates():
            raise ApproximationError("--calibration is for error compensation: add --compensate MODE "
                                     "(or compensate: in the plan)")
        parse_spec(calibration)  # a bad spec fails before the model is read
    src = Path(args.input)
    model = model_io.load(src)
    out, report = approximate(model, plan, calibration)
    if not report.nodes:
        raise ApproximationError(f"{src}: no Conv/Gemm/MatMul found")
    _write_report(args, report)  # the node-by-node account, refusals included
    if not any(n.status in ("rewritten", "exact") for n in report.nodes):
        raise _refuse(src, model, report, args.lowering)
    if args.strict and report.skipped:
        _print_skips(report, args.lowering)
        first = report.skipped[0]
        raise ApproximationError(f"--strict: {len(report.skipped)} op(s) skipped, e.g. {first.node}: {first.reason}")
    model_io.save(out, args.output)
    summary = report.summary()
    print(f"{args.output}: {summary.get('rewritten', 0)} rewritten "
          f"({', '.join(f'{k} {v}' for k, v in summary['lowerings'].items()) or 'none'}), "
          f"{summary.get('exact', 0)} kept exact, {summary.get('skipped', 0)} skipped")
    if report.compensation is not None:
        print(f"  {describe_compensation(report.compensation)}")
    _print_skips(report, args.lowering)
    return report


def describe_compensation(record: dict) -> str:
    """One line of a `Report.compensation` record: mode, calibration set, what changed."""
    done = [n for n in record["nodes"] if n["status"] == "compensated"]
    source = record.get("calibration") or {}
    where = (f"{source['n']} {source['dataset']} {source['split']} images" if "dataset" in source
             else f"{source['n']} images" if "n" in source else "no calibration needed")
    weights = sum(n.get("weights_changed", 0) for n in done)
    biases = sum(1 for n in done if n.get("bias"))
    linear = sum(1 for n in done if n.get("linear"))
    return (f"compensation {record['mode']} ({where}): {len(done)} op(s) compensated, {weights} weights tuned, "
            f"{biases} biases corrected" + (f", {linear} linear terms" if linear else ""))


def main(argv=None) -> int:
    args = create_args_parser().parse_args(argv)
    try:
        run(args)
    except (ApproximationError, PlanError, model_io.ModelFileError, CompensationError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
