"""`hard`: E fresh copies behind a noisy top-k gate with the Switch balancing loss
(`models.gating.TopKGate`); each row runs through its k experts only."""

from __future__ import annotations

from dataclasses import dataclass

from models.config import ModelConfigError
from models.gating import AUX_LOSS_WEIGHT, TopKGate
from models.topology import MoEOptions, TopologySpec, register_topology, routed_layer, routed_mlp


@dataclass(frozen=True)
class HardOptions(MoEOptions):
    """Hard MoE options; the balancing weight's default is `models.gating.AUX_LOSS_WEIGHT`."""

    top_k: int = 1                              # k, experts each row runs through
    noisy_gating: bool = True                   # Shazeer's learned Gaussian noise while training
    aux_loss_weight: float = AUX_LOSS_WEIGHT    # alpha of the Switch balancing loss

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 1 <= self.top_k <= self.num_experts:
            raise ModelConfigError(f"top_k must be in 1..num_experts={self.num_experts}, got {self.top_k}")
        if self.aux_loss_weight < 0:
            raise ModelConfigError(f"aux_loss_weight must be >= 0, got {self.aux_loss_weight}")


def top_k_gate(options: HardOptions, dim: int) -> TopKGate:
    return TopKGate(dim, options.num_experts, options.top_k, options.noisy_gating, options.aux_loss_weight)


HARD = register_topology(TopologySpec(
    name="hard", description="noisy top-k gate, Switch balancing loss; rows run k experts",
    color="#1f77b4", marker="o", options=HardOptions, router=TopKGate, gate=top_k_gate,
    cnn_layer=routed_layer, vit_mlp=routed_mlp(per_image=False)))
