"""`soft`: E copies mixed by softmax weights, every expert runs (`models.gating.SoftmaxGate`,
one routing token per input); on ViT tokens, Soft MoE with p slots per expert
(`models.soft_moe.SoftMoEMlp`)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Callable

from torch import nn

from models.config import ModelConfigError
from models.gating import SoftmaxGate
from models.soft_moe import SoftMoEMlp
from models.topology import MoEOptions, Topology, TopologySpec, register_topology, routed_layer


@dataclass(frozen=True)
class SoftOptions(MoEOptions):
    slots_per_expert: int = 1       # p, Soft MoE slots per expert (ViT tokens only)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.slots_per_expert < 1:
            raise ModelConfigError(f"slots_per_expert must be >= 1, got {self.slots_per_expert}")


def softmax_gate(options: SoftOptions, dim: int) -> SoftmaxGate:
    return SoftmaxGate(dim, options.num_experts)


def soft_moe_mlp(topology: Topology) -> Callable[..., nn.Module]:
    return partial(SoftMoEMlp, num_experts=topology.options.num_experts,
                   slots_per_expert=topology.options.slots_per_expert)


SOFT = register_topology(TopologySpec(
    name="soft", description="softmax mixture of all experts; Soft MoE slots on ViT tokens",
    color="#ff7f0e", marker="^", options=SoftOptions, router=SoftmaxGate, gate=softmax_gate,
    cnn_layer=routed_layer, vit_mlp=soft_moe_mlp, token_options=("slots_per_expert",)))
