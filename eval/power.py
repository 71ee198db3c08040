"""Normalised power (../shared/DESIGN.md, "Normalised power"):

    P_norm = sum_l MACs_l x P(mult_l)  /  (sum_l' MACs_l'(dense) x P(exact))

MACs_l are the active MACs of layer l on the evaluated data under the model's actual routing:
the trunk runs every row, a Hard MoE expert only the rows routed to it (k per row in all),
Soft MoE every expert, Cluster MoE one expert; routers count too. P(mult_l) is the power of
the multiplier the pass gave layer l (PDK45 `power_mW`); layers the pass did not rewrite (the
float router, skipped ops) count at P(exact). The denominator is the dense model of the same
architecture on the same images: its trunk plus one expert per MoE layer, no router. So the
exact dense model scores 1, a top-1 Hard MoE slightly above 1 (its router), and a
multiplier that halves the power of every product halves P_norm.

The `linear` compensation term (`passes.compensate`) adds one reduction per output pixel and
group: K additions of the activations, no multiplies. Power is counted in multiplies (the
adders of the accumulation are exact and priced at zero in P(mult)), so the term adds 0 to
P_norm; `eval.macs` lists its additions per layer (`linear_additions`) so the cost is visible.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Mapping

import multipliers


@dataclass(frozen=True)
class LayerWork:
    """One MAC layer's work on the evaluated data."""
    name: str                # source node name
    role: str                # trunk | router | expert
    macs: int                # active MACs over all evaluated images
    multiplier: str | None   # assigned multiplier (None: exact)


def relative_power(name: str | None) -> float | None:
    """P(mult) / P(exact); 1 for None (not rewritten); None when the power is unpublished."""
    reference = multipliers.exact()
    if name is None:
        return 1.0
    mult = multipliers.get(name)
    if mult.is_exact:
        return 1.0
    return mult.relative_power(reference)


def weighted_macs(work: Iterable[LayerWork]) -> tuple[float | None, list[str]]:
    """sum_l MACs_l x P(mult_l) / P(exact), and the multipliers of unknown power (then None)."""
    total, unknown = 0.0, []
    for layer in work:
        rel = relative_power(layer.multiplier)
        if rel is None:
            if layer.multiplier not in unknown:
                unknown.append(layer.multiplier)
            continue
        total += layer.macs * rel
    return (None if unknown else total), unknown


def dense_macs_per_image(trunk_per_image: float, expert_per_row: Mapping[str, float],
                         rows_per_image: Mapping[str, float]) -> float:
    """MACs of the dense counterpart per image: the trunk plus, for every MoE layer, one
    expert's MACs per row times the rows the layer sees per image (1 for per-image routing,
    tokens per image for per-token routing)."""
    return trunk_per_image + sum(expert_per_row[m] * rows_per_image.get(m, 1.0) for m in expert_per_row)


def normalised_power(work: Iterable[LayerWork], images: int, dense_per_image: float) -> float | None:
    """P_norm of the module docstring; None when a multiplier's power is unknown."""
    if images <= 0 or dense_per_image <= 0:
        raise ValueError("normalised power needs images > 0 and a dense MAC count > 0")
    weighted, _ = weighted_macs(work)
    if weighted is None:
        return None
    return weighted / (images * dense_per_image)
