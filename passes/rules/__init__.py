"""The approximation pass's rewrite rules, one per source form of an 8-bit integer product.

    rule            pattern (source form)                                      module
    qdq_conv        DQ(x_q) -> Conv <- DQ(w_q) [<- DQ(b)] [-> Q]                  qdq_conv.py
    qdq_matmul      DQ(x_q) -> Gemm / MatMul <- DQ(w_q) [<- DQ(b)] [-> Q]         qdq_matmul.py
    qlinear_conv    QLinearConv(x_q, ..., w_q, ...[, b])                         qlinear_conv.py
    qlinear_matmul  QLinearMatMul(x_q, ..., w_q, ...)                            qlinear_matmul.py
    conv_integer    ConvInteger(x_q, w_q[, zx, zw])                              conv_integer.py
    matmul_integer  MatMulInteger(x_q, w_q[, zx, zw])                            matmul_integer.py
    qgemm           com.microsoft.QGemm(x_q, ..., w_q, ...[, b][, sy, zy])       qgemm.py

Each rule's `check` turns a matched node into an `IntegerOp` or a `Rejection` naming one of
its `reasons`; its `rewrite` lowers the IntegerOp through `passes.lowering`. A new source
form is one new module with a `Rule` subclass and one entry in `RULES`. Only the main graph
is rewritten: `subgraph_matches` finds the nodes a rule matches inside If / Loop / Scan bodies,
which the pass reports as left alone (`Reason.IN_SUBGRAPH`).
"""

from __future__ import annotations

import onnx_ir as ir

from passes.candidates import IntegerOp
from passes.reasons import Rejection
from passes.rules._rule import Pattern, Rule, mask_term
from passes.rules.conv_integer import ConvIntegerRule
from passes.rules.matmul_integer import MatMulIntegerRule
from passes.rules.qdq_conv import QDQConvRule
from passes.rules.qdq_matmul import QDQMatMulRule
from passes.rules.qgemm import QGemmRule
from passes.rules.qlinear_conv import QLinearConvRule
from passes.rules.qlinear_matmul import QLinearMatMulRule

RULES: list[Rule] = [QDQConvRule(), QDQMatMulRule(), QLinearConvRule(), QLinearMatMulRule(), ConvIntegerRule(),
                     MatMulIntegerRule(), QGemmRule()]

__all__ = ["RULES", "Pattern", "Rule", "find_candidates", "mask_term", "match", "subgraph_matches"]


def match(node: ir.Node) -> Rule | None:
    """The rule whose pattern matches `node`, if any."""
    return next((rule for rule in RULES if rule.pattern.matches(node)), None)


def subgraph_matches(graph: ir.Graph) -> list[tuple[Rule, ir.Node, ir.Node, str]]:
    """(rule, node, owner, attribute) for every node some rule matches inside a subgraph (If /
    Loop / Scan body, at any depth) of `graph`: `owner` is the main-graph node holding it."""
    found = []

    def visit(sub: ir.Graph, owner: ir.Node, attribute: str) -> None:
        for node in sub:
            rule = match(node)
            if rule is not None:
                found.append((rule, node, owner, attribute))
            for inner in _subgraphs(node):
                visit(inner[1], owner, attribute)

    for node in graph:
        for attribute, sub in _subgraphs(node):
            visit(sub, node, attribute)
    return found


def _subgraphs(node: ir.Node):
    for attr in node.attributes.values():
        if attr.type == ir.AttributeType.GRAPH:
            yield attr.name, attr.as_graph()
        elif attr.type == ir.AttributeType.GRAPHS:
            for sub in attr.as_graphs():
                yield attr.name, sub


def find_candidates(graph: ir.Graph) -> list[tuple[Rule, IntegerOp | Rejection]]:
    """Every node of `graph` some rule matches, in topological order, with its rule's verdict."""
    found = []
    for node in graph:
        rule = match(node)
        if rule is not None:
            found.append((rule, rule.check(node)))
    return found
