"""Names inside an axmoe model file: experts, and the nodes axmoe itself adds.

Experts. The exporter names every node and tensor of expert e of an MoE layer with an
`experts.<e>` path segment (torch's ModuleList path), e.g.

    /stages/stages.2/experts.1/experts.1.0/conv1/Conv      -> layer "/stages/stages.2/", expert 1
    blocks.1.mlp.experts.0.fc1.weight                      -> layer "blocks.1.mlp.", expert 0

and the dense model an MoE model is upcycled from has the same names without that segment
(`dense_name`: blocks.1.mlp.experts.0.fc1.weight -> blocks.1.mlp.fc1.weight).

Node prefixes. Nodes the pass adds are named `rewrite_scope(<source node>) + "/..."` and its
tables `lut_name(<multiplier>)`; nodes the evaluator adds to probe a graph `EVAL_PREFIX + ...`,
so either can be told apart from the model's own nodes.
"""

from __future__ import annotations

import re

EXPERT_SEGMENT = "experts"
#: the first `experts.<e>` segment of a name, ending at "/", "." or the end of the name
EXPERT = re.compile(rf"^(.*?){EXPERT_SEGMENT}\.(\d+)(?=[/.]|$)")
REWRITE_PREFIX = "axmoe/"
EVAL_PREFIX = "axmoe_eval/"
LUT_PREFIX = "axmoe_lut_"


def expert_segment(index: int) -> str:
    """The path segment of expert `index`: "experts.3"."""
    return f"{EXPERT_SEGMENT}.{int(index)}"


def split_expert(name: str) -> tuple[str, int] | None:
    """(MoE layer prefix, expert index) of a name inside an expert, else None."""
    match = EXPERT.match(name)
    return (match.group(1), int(match.group(2))) if match else None


def expert_index(name: str) -> int | None:
    """Expert index of a name ('/stages/stages.2/experts.1/experts.1.0/conv1/Conv' -> 1)."""
    split = split_expert(name)
    return split[1] if split else None


def moe_layer_of(name: str) -> str | None:
    """Name prefix shared by the experts of one MoE layer ('/stages/stages.2/')."""
    split = split_expert(name)
    return split[0] if split else None


def with_expert(name: str, index: int) -> str:
    """`name` with every `experts.<e>` segment set to expert `index` (a sibling's name)."""
    return re.sub(rf"{EXPERT_SEGMENT}\.\d+", expert_segment(index), name)


def dense_name(name: str) -> str:
    """State-dict `name` with every `.experts.<e>.` segment dropped: the name of the same
    weight in the dense model ('stages.2.experts.3.0.conv1.weight' -> 'stages.2.0.conv1.weight')."""
    return re.sub(rf"\.{EXPERT_SEGMENT}\.\d+\.", ".", name)


def safe_name(name: str) -> str:
    """`name` with every character outside [A-Za-z0-9_] replaced by "_"."""
    return re.sub(r"[^A-Za-z0-9_]", "_", name)


def rewrite_scope(source: str) -> str:
    """Name prefix of the nodes the pass adds for node `source`: "axmoe/<safe source>"."""
    return REWRITE_PREFIX + safe_name(source)


def lut_name(multiplier: str) -> str:
    """Initializer name of a multiplier's table in a rewritten model: "axmoe_lut_<name>"."""
    return LUT_PREFIX + safe_name(multiplier)
