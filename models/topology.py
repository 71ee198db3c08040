"""The four topologies and how they turn a module into an MoE layer.

- `dense`: the module itself.
- `hard`: E fresh copies behind a noisy top-k gate with the Switch balancing loss
  (`models.gating.TopKGate`).
- `soft`: E copies mixed by softmax weights (one routing token per input: every expert
  runs); on ViT tokens, Soft MoE with slots (`models.soft_moe.SoftMoEMlp`).
- `cluster`: E copies behind nearest-centroid routing (`models.gating.CentroidGate`); the
  centroids come from k-means on a trained dense trunk and the experts start from the dense
  weights (`train.cluster`, `models.upcycle`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Callable

from torch import nn

from models.config import ModelConfigError
from models.gating import CentroidGate, SoftmaxGate, TopKGate
from models.moe import MoELayer

TOPOLOGIES = ("dense", "hard", "soft", "cluster")

#: options each topology accepts (fields of `Topology`), beyond the arch's own
TOPOLOGY_OPTIONS: dict[str, tuple[str, ...]] = {
    "dense": (),
    "hard": ("num_experts", "top_k", "noisy_gating", "aux_loss_weight"),
    "soft": ("num_experts", "slots_per_expert"),
    "cluster": ("num_experts",),
}


@dataclass(frozen=True)
class Topology:
    """A topology and its options.

    The balancing weight defaults to 0.1, not Switch's 0.01: Switch routes thousands of
    tokens a batch under capacity limits, while a CNN here routes each of 128 images with
    none, and on Fashion-MNIST ResNet-20 (4 experts, top-1, 2 epochs) 0.01 left 2 experts
    unused at inference and 0.03 one, where 0.1 spread the test images evenly.
    """

    name: str                       # dense | hard | soft | cluster
    num_experts: int = 4            # E, experts per MoE layer
    top_k: int = 1                  # k, experts each row runs through (hard)
    noisy_gating: bool = True       # Shazeer's learned Gaussian noise while training (hard)
    aux_loss_weight: float = 0.1    # alpha of the Switch balancing loss (hard); see below
    slots_per_expert: int = 1       # p, Soft MoE slots per expert (soft, ViT tokens)

    def __post_init__(self) -> None:
        if self.name not in TOPOLOGIES:
            raise ModelConfigError(f"unknown topology {self.name!r} (valid: {', '.join(TOPOLOGIES)})")
        if self.num_experts < 1:
            raise ModelConfigError(f"num_experts must be >= 1, got {self.num_experts}")
        if not 1 <= self.top_k <= self.num_experts:
            raise ModelConfigError(f"top_k must be in 1..num_experts={self.num_experts}, got {self.top_k}")
        if self.aux_loss_weight < 0:
            raise ModelConfigError(f"aux_loss_weight must be >= 0, got {self.aux_loss_weight}")
        if self.slots_per_expert < 1:
            raise ModelConfigError(f"slots_per_expert must be >= 1, got {self.slots_per_expert}")

    @property
    def is_moe(self) -> bool:
        return self.name != "dense"

    def options(self) -> dict[str, object]:
        """The options of this topology as plain data (those in `TOPOLOGY_OPTIONS`)."""
        return {k: getattr(self, k) for k in TOPOLOGY_OPTIONS[self.name]}

    def gate(self, dim: int) -> nn.Module:
        """A router over D = `dim` routing features."""
        if self.name == "hard":
            return TopKGate(dim, self.num_experts, self.top_k, self.noisy_gating, self.aux_loss_weight)
        if self.name == "soft":
            return SoftmaxGate(dim, self.num_experts)
        if self.name == "cluster":
            return CentroidGate(dim, self.num_experts)
        raise ModelConfigError("a dense topology has no gate")

    def layer(self, build: Callable[[], nn.Module], dim: int,
              pool_dims: tuple[int, ...] = (2, 3)) -> nn.Module:
        """`build()` for dense, else an `MoELayer` of E independently built copies.

        Args:
            build: makes one (freshly initialised) module, e.g. a CNN stage.
            dim: D, size of the routing features (channels of the module's input).
            pool_dims: dims of the input averaged into routing features.
        """
        if not self.is_moe:
            return build()
        return MoELayer([build() for _ in range(self.num_experts)], self.gate(dim), pool_dims)


def make_topology(name: str, **options: object) -> Topology:
    """`Topology` from a name and its options (already type-checked)."""
    if name not in TOPOLOGIES:
        from models.config import suggest
        raise ModelConfigError(f"unknown topology {name!r}{suggest(name, TOPOLOGIES)} "
                               f"(valid: {', '.join(TOPOLOGIES)})")
    valid = set(TOPOLOGY_OPTIONS[name])
    fields = {f.name for f in dataclasses.fields(Topology)} - {"name"}
    for key in options:
        if key not in valid and key in fields:
            raise ModelConfigError(f"option {key!r} does not apply to topology {name!r} "
                                   f"(its options: {', '.join(TOPOLOGY_OPTIONS[name]) or 'none'})")
    return Topology(name, **options)  # type: ignore[arg-type]
