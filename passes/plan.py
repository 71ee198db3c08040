"""Approximation plans: which multiplier (and lowering) each approximable op gets.

A plan is YAML (or the same dict in Python):

    multiplier: mul8s_1L2L          # default for every approximable op
    lowering: auto                  # auto | lut | decomposed
    operand_order: xw               # xw: lut[activation, weight]; wx: lut[weight, activation]
    keep_exact: [first_conv, classifier, "*stem*"]   # keywords or node-name globs
    overrides:                      # first match wins, in order
      - match: {name: "*experts.2*"}          # fnmatch glob on the node name
        multiplier: mul8s_1KVA
      - match: {op_type: MatMul}              # Conv | Gemm | MatMul | QLinearConv | ...
        multiplier: exact
      - match: {layer: [0, 1]}                # index among approximable ops (topological)
        lowering: lut
      - match: {expert: 3}                    # MoE expert index (from "experts.<i>" in the name)
        multiplier: exact
    exact_experts: {score: maxnnscore, fraction: 0.25}
    compensate: weights+bias        # none | bias | weights | weights+bias | linear (per override too)

`compensate` is the error-compensation mode (`passes.compensate`) of the ops a plan
approximates: the int8 weights and biases are tuned for the op's multiplier before the
rewrite, from activation statistics of the exact model (`passes.calibration`). An override's
`compensate` sets it for the ops it matches; ops the plan keeps exact are left as they are
in every mode. `linear` (control variate) is weights+bias plus a term in the sum of each
output's activations, fitted by least squares and applied by the rewrite (one extra reduction
per output pixel).

`exact_experts` keeps the most noise-sensitive experts of every MoE layer exact: MaxNNScore
ranks expert e by max_r ||W_e[r, :]||_2 over the rows (output filters) of its first weight
matrix; the top ceil(fraction * E) stay exact. `exact` names the exact multiplier.
"""

from __future__ import annotations

import fnmatch
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np

import multipliers
from modelfile.naming import expert_index, moe_layer_of
from multipliers import Multiplier

LOWERINGS = ("auto", "lut", "decomposed")
OPERAND_ORDERS = ("xw", "wx")
KEEP_KEYWORDS = ("first_conv", "classifier")
MATCH_KEYS = ("name", "op_type", "layer", "expert")
#: error-compensation modes (`passes.compensate.MODES`, which this must equal: test_plan checks)
COMPENSATE_MODES = ("none", "bias", "weights", "weights+bias", "linear")


class PlanError(ValueError):
    pass


def _as_list(value) -> list:
    return list(value) if isinstance(value, (list, tuple)) else [value]


@dataclass(frozen=True)
class Override:
    match: dict  # subset of MATCH_KEYS
    multiplier: str | None = None
    lowering: str | None = None
    compensate: str | None = None  # COMPENSATE_MODES

    def matches(self, name: str, op_type: str, layer: int, expert: int | None) -> bool:
        for key, wanted in self.match.items():
            if key == "name" and not any(fnmatch.fnmatchcase(name, g) for g in _as_list(wanted)):
                return False
            if key == "op_type" and op_type not in _as_list(wanted):
                return False
            if key == "layer" and layer not in [int(v) for v in _as_list(wanted)]:
                return False
            if key == "expert" and (expert is None or expert not in [int(v) for v in _as_list(wanted)]):
                return False
        return True


@dataclass(frozen=True)
class Plan:
    multiplier: str = "exact"  # default multiplier
    lowering: str = "auto"  # default lowering
    operand_order: str = "xw"  # which operand indexes LUT rows
    keep_exact: tuple[str, ...] = ()  # keywords (first_conv, classifier) or name globs
    overrides: tuple[Override, ...] = ()  # first match wins
    exact_experts: dict | None = None  # {"score": "maxnnscore", "fraction": 0.25}
    compensate: str = "none"  # default error-compensation mode (COMPENSATE_MODES)
    source: dict = field(default_factory=dict, compare=False)  # the plan as written

    def __post_init__(self):
        if self.lowering not in LOWERINGS:
            raise PlanError(f"unknown lowering {self.lowering!r}; valid: {', '.join(LOWERINGS)}")
        if self.operand_order not in OPERAND_ORDERS:
            raise PlanError(f"operand_order must be one of {', '.join(OPERAND_ORDERS)}, got {self.operand_order!r}")
        for name in self.multiplier_names():
            resolve_multiplier(name)  # fail early on unknown names
        check_compensate(self.compensate, "compensate")
        for i, override in enumerate(self.overrides):
            if override.lowering is not None and override.lowering not in LOWERINGS:
                raise PlanError(f"unknown lowering {override.lowering!r} in an override")
            if override.compensate is not None:
                check_compensate(override.compensate, f"override {i}: compensate")
        if self.exact_experts is not None:
            score = self.exact_experts.get("score", "maxnnscore")
            fraction = self.exact_experts.get("fraction", 0.25)
            if score != "maxnnscore":
                raise PlanError(f"exact_experts.score must be maxnnscore, got {score!r}")
            if not isinstance(fraction, (int, float)) or not 0 <= fraction <= 1:
                raise PlanError(f"exact_experts.fraction must be in [0, 1], got {fraction!r}")

    def multiplier_names(self) -> list[str]:
        return [self.multiplier] + [o.multiplier for o in self.overrides if o.multiplier]

    def compensates(self) -> bool:
        """Whether any op can get a compensation mode other than none."""
        return self.compensate != "none" or any(o.compensate not in (None, "none") for o in self.overrides)

    def to_dict(self) -> dict:
        return self.source or {"multiplier": self.multiplier, "lowering": self.lowering,
                               "operand_order": self.operand_order,
                               **({"compensate": self.compensate} if self.compensate != "none" else {})}


def check_compensate(mode, key: str = "compensate") -> None:
    """PlanError (one line) unless `mode` is one of COMPENSATE_MODES."""
    if isinstance(mode, str) and mode in COMPENSATE_MODES:
        return
    raise PlanError(f"{key}: unknown mode {mode!r}; valid: {', '.join(COMPENSATE_MODES)}")


def resolve_multiplier(name: str) -> Multiplier:
    if str(name).lower() == "exact":
        return multipliers.exact()
    try:
        return multipliers.get(str(name))
    except ValueError as exc:
        raise PlanError(str(exc)) from None


def plan_from_dict(data: Mapping[str, Any]) -> Plan:
    if not isinstance(data, Mapping):
        raise PlanError("a plan must be a mapping (multiplier, lowering, overrides, ...)")
    known = {"multiplier", "lowering", "operand_order", "keep_exact", "overrides", "exact_experts", "compensate"}
    unknown = set(data) - known
    if unknown:
        raise PlanError(f"unknown plan key(s) {', '.join(sorted(unknown))}; valid: {', '.join(sorted(known))}")
    overrides = []
    for i, item in enumerate(data.get("overrides") or []):
        if not isinstance(item, Mapping) or not isinstance(item.get("match"), Mapping):
            raise PlanError(f"override {i}: needs a 'match' mapping")
        bad = set(item["match"]) - set(MATCH_KEYS)
        if bad:
            raise PlanError(f"override {i}: unknown match key(s) {', '.join(sorted(bad))}; "
                             f"valid: {', '.join(MATCH_KEYS)}")
        unknown_keys = set(item) - {"match", "multiplier", "lowering", "compensate"}
        if unknown_keys:
            raise PlanError(f"override {i}: unknown key(s) {', '.join(sorted(map(str, unknown_keys)))}; "
                            f"valid: match, multiplier, lowering, compensate")
        if not {"multiplier", "lowering", "compensate"} & set(item):
            raise PlanError(f"override {i}: sets neither multiplier nor lowering nor compensate")
        if "compensate" in item:
            check_compensate(item["compensate"], f"override {i}: compensate")
        overrides.append(Override(dict(item["match"]), item.get("multiplier"), item.get("lowering"),
                                  item.get("compensate")))
    exact_experts = data.get("exact_experts")
    if exact_experts is not None and not isinstance(exact_experts, Mapping):
        raise PlanError("exact_experts must be a mapping like {score: maxnnscore, fraction: 0.25}")
    check_compensate(data.get("compensate", "none"))
    return Plan(multiplier=str(data.get("multiplier", "exact")), lowering=str(data.get("lowering", "auto")),
                operand_order=str(data.get("operand_order", "xw")),
                keep_exact=tuple(str(k) for k in _as_list(data.get("keep_exact") or [])),
                overrides=tuple(overrides), exact_experts=dict(exact_experts) if exact_experts else None,
                compensate=data.get("compensate", "none"), source=json.loads(json.dumps(dict(data))))


def load_plan(path: str | Path) -> Plan:
    import yaml

    path = Path(path)
    if not path.is_file():
        raise PlanError(f"{path}: no such plan file")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise PlanError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    return plan_from_dict(data or {})


def maxnnscore_exact(ops: list, fraction: float) -> set[str]:
    """Names of the ops of the experts MaxNNScore keeps exact (see module docstring).

    Args:
        ops: `IntegerOp`s in topological order; each expert's first one holds its first
            weight matrix (rows = output channels).
    """
    first: dict[tuple[str, int], Any] = {}
    members: dict[tuple[str, int], list[str]] = {}
    for op in ops:
        layer, expert = moe_layer_of(op.name), expert_index(op.name)
        if layer is None:
            continue
        members.setdefault((layer, expert), []).append(op.name)
        first.setdefault((layer, expert), op)
    keep: set[str] = set()
    for layer in {key[0] for key in first}:
        experts = sorted(e for (l, e) in first if l == layer)
        count = math.ceil(fraction * len(experts) - 1e-9)
        scores = {}
        for e in experts:
            op = first[(layer, e)]
            w = op.weight.astype(np.float64)
            rows = w.reshape(w.shape[0], -1) if op.kind == "conv" else w.T  # output channel rows
            scale = np.broadcast_to(op.w_scale if op.w_scale is not None else 1.0, (rows.shape[0],))
            scores[e] = float(np.max(np.linalg.norm(rows * scale[:, None], axis=1)))
        for e in sorted(experts, key=lambda e: -scores[e])[:count]:
            keep.update(members[(layer, e)])
    return keep


@dataclass(frozen=True)
class Assignment:
    multiplier: Multiplier
    lowering: str
    reason: str  # which rule chose it
    compensate: str = "none"  # error-compensation mode (a no-op where the multiplier is exact)


def assign(plan: Plan, ops: list) -> dict[str, Assignment]:
    """Multiplier, lowering and compensation mode for every `IntegerOp` (by node name) under
    `plan`: what the pass rewrites with and `passes.compensate` tunes for, node for node."""
    exact = multipliers.exact()
    convs = [op for op in ops if op.kind == "conv"]
    keep = set()
    for item in plan.keep_exact:
        if item == "first_conv" and convs:
            keep.add(convs[0].name)
        elif item == "classifier" and ops:
            keep.add(ops[-1].name)
        else:
            keep.update(op.name for op in ops if fnmatch.fnmatchcase(op.name, item))
    experts_exact = maxnnscore_exact(ops, plan.exact_experts.get("fraction", 0.25)) if plan.exact_experts else set()
    out = {}
    for layer, op in enumerate(ops):
        mult, lowering, reason = resolve_multiplier(plan.multiplier), plan.lowering, "default"
        mode = plan.compensate
        for i, override in enumerate(plan.overrides):
            if override.matches(op.name, op.node.op_type, layer, expert_index(op.name)):
                if override.multiplier:
                    mult = resolve_multiplier(override.multiplier)
                lowering = override.lowering or lowering
                mode = override.compensate or mode
                reason = f"override {i}"
                break
        if op.name in keep:
            mult, reason = exact, "keep_exact"
        elif op.name in experts_exact:
            mult, reason = exact, "exact_experts (maxnnscore)"
        out[op.name] = Assignment(mult, lowering, reason, mode)
    return out
