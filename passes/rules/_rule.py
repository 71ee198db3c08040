"""A rewrite rule: which node it starts from (pattern), whether the source form around it is
an exact signed 8x8 product (check), and how it is replaced (rewrite).

    rule.pattern.matches(node)          op type and domain
    rule.check(node)                    -> IntegerOp | Rejection  (every rejection a `Reason`)
    rule.rewrite(graph, op, table, ...) lowers the IntegerOp (passes.lowering) in place

The shape follows onnxscript's rewriter (`pattern` / `check` / `rewrite`, a failed check
explains itself), but each rule matches by hand instead of through onnxscript's pattern
graphs: the producers a form needs come through any number of Identity nodes, constants are
initializers or Constant nodes, the trailing QuantizeLinear and the bias are optional, and a
node that does not fit must still be reported with the reason, where a pattern graph that
does not match says nothing.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import onnx_ir as ir

from modelfile import naming
from multipliers import Multiplier
from multipliers.decompose import Decomposition, Term
from passes.candidates import IntegerOp
from passes.lowering import Builder, apply_masks_in_place, lower_decomposed_terms, lower_lut
from passes.reasons import Reason, Rejection

ONNX_DOMAINS = ("", "ai.onnx")


@dataclass(frozen=True)
class Pattern:
    """The node a rule starts from: one of `op_types` in `domain` (the ONNX domain by default,
    "" or "ai.onnx"; e.g. "com.microsoft" for onnxruntime's contrib ops)."""

    op_types: tuple[str, ...]
    domain: str = ""

    def matches(self, node: ir.Node) -> bool:
        domains = ONNX_DOMAINS if self.domain in ONNX_DOMAINS else (self.domain,)
        return node.op_type in self.op_types and node.domain in domains


def mask_term(decomposition: Decomposition) -> Term | None:
    """The one term of an operand-mask multiplier, mul(a, b) = (a & ma) * (b & mb), else None."""
    if decomposition.exact and decomposition.num_terms == 1 and decomposition.terms[0].coef == 1:
        return decomposition.terms[0]
    return None


class Rule(ABC):
    """One source form of an approximable product (see module docstring)."""

    name: ClassVar[str]  # the rule's id, its module's name
    pattern: ClassVar[Pattern]
    reasons: ClassVar[tuple[Reason, ...]]  # every reason `check` can reject with

    @abstractmethod
    def check(self, node: ir.Node) -> IntegerOp | Rejection:
        """The IntegerOp behind a node the pattern matched, or why there is none."""

    def rewrite(self, graph: ir.Graph, op: IntegerOp, table: Multiplier, lowering: str, bitwise: bool,
                linear: np.ndarray | None = None) -> int | None:
        """Replaces `op` by its `lowering` ("lut" | "decomposed") of multiplier `table`.

        An operand-mask multiplier under "decomposed" keeps the op and masks its operands;
        every other case computes the accumulator anew, requantizes it and reroutes the op's
        consumers to it. `linear` (int64 g [M]): the linear compensation term is added to the
        accumulator (`passes.lowering`), so a mask multiplier takes the one-term product then.
        `bitwise`: the model's opset has BitwiseAnd/Or (18+). Returns the
        number of terms computed (None for a table without an exact decomposition); raises
        `passes.lowering.MaskUnsupported` when the model's opset cannot express the masks.
        """
        if op.x.type is None:
            # produced by an op shape inference does not know (com.microsoft.QLinearSoftmax, ...):
            # the new nodes' inference needs its dtype, which the zero point fixes
            op.x.type = ir.TensorType(ir.DataType.UINT8 if op.x_zero_point == 128 else ir.DataType.INT8)
        builder = Builder(graph, naming.rewrite_scope(op.name), bitwise=bitwise)
        dec = table.decomposition
        term = mask_term(dec)
        if lowering == "decomposed" and term is not None and linear is None:
            apply_masks_in_place(builder, op, term)
            graph.insert_before(op.node, builder.nodes)
            return 1
        if lowering == "lut":
            lut_value = builder.const(table.lut.astype(np.int32), name=naming.lut_name(table.name))
            new_output = lower_lut(builder, op, lut_value, linear)
            terms = dec.num_terms if dec.exact else None
        else:
            new_output = lower_decomposed_terms(builder, op, dec, linear)
            terms = dec.num_terms
        graph.insert_before(op.node, builder.nodes)
        replace_output(graph, op, new_output)
        return terms


def replace_output(graph: ir.Graph, op: IntegerOp, new: ir.Value) -> None:
    """Consumers of `op.output` read `new`; the source nodes left without a use go."""
    old = op.output
    was_output = old.is_graph_output()
    new.type, new.shape = old.type, old.shape  # the same tensor, computed anew
    old.replace_all_uses_with(new, replace_graph_outputs=True)
    if was_output:  # the graph output keeps its name
        name = old.name
        old.name = name + "_replaced"
        new.name = name
    for node in [*op.removable, op.node]:
        if node.graph is graph and not any(len(list(v.uses())) for v in node.outputs) \
                and not any(v.is_graph_output() for v in node.outputs):
            graph.remove(node, safe=True)
