"""Soft MoE over tokens (Puigcerver et al., "From Sparse to Soft Mixtures of Experts", ICLR 2024).

For tokens X (B, m, d), E experts with p slots each and learned Phi (d, E p), scale s:

    L  = l2norm_d(X) (s * l2norm_d(Phi))     (B, m, E p) logits
    D  = softmax over tokens m of L          dispatch weights
    C  = softmax over slots E p of L         combine weights
    X~ = D^T X                               (B, E p, d) slots
    Y~ = [E_1(X~_1), ..., E_E(X~_E)]         expert e processes its p slots
    Y  = C Y~                                (B, m, d)

No auxiliary loss. Every expert runs on its p slots of every image; the loop over experts is
static, so it exports as is.
"""

from __future__ import annotations

import math
from typing import Optional, Type

import torch
import torch.nn.functional as F
from timm.layers import Mlp
from torch import Tensor, nn

from models.moe import MoEBase


class SoftMoEMlp(MoEBase):
    """Drop-in for timm's `Mlp` (same constructor arguments) as a Soft MoE of E Mlp experts.

    Args:
        in_features, hidden_features, out_features, act_layer, norm_layer, bias, drop: as
            timm's `Mlp`, for every expert.
        num_experts: E.
        slots_per_expert: p.
    """

    def __init__(self, in_features: int, hidden_features: Optional[int] = None,
                 out_features: Optional[int] = None, act_layer: Type[nn.Module] = nn.GELU,
                 norm_layer: Optional[Type[nn.Module]] = None, bias: bool = True, drop: float = 0.0,
                 *, num_experts: int = 4, slots_per_expert: int = 1,
                 device: Optional[torch.device] = None, dtype: Optional[torch.dtype] = None) -> None:
        super().__init__()
        self.num_experts = num_experts
        self.slots_per_expert = slots_per_expert
        self.experts = nn.ModuleList(
            Mlp(in_features, hidden_features, out_features, act_layer=act_layer,
                norm_layer=norm_layer, bias=bias, drop=drop, device=device, dtype=dtype)
            for _ in range(num_experts))
        self.phi = nn.Parameter(torch.empty(in_features, num_experts * slots_per_expert,
                                            device=device, dtype=dtype))
        self.scale = nn.Parameter(torch.ones((), device=device, dtype=dtype))
        self.init_weights()

    def init_weights(self) -> None:
        # LeCun normal, as in the paper; timm's ViT initialiser calls this hook.
        nn.init.normal_(self.phi, std=1.0 / math.sqrt(self.phi.shape[0]))
        nn.init.ones_(self.scale)

    def forward(self, x: Tensor) -> Tensor:
        """x (B, m, d) -> (B, m, out_features)."""
        logits = F.normalize(x, dim=-1) @ (self.scale * F.normalize(self.phi, dim=0))
        dispatch = logits.softmax(dim=1)
        combine = logits.softmax(dim=2)
        slots = dispatch.transpose(1, 2) @ x
        p = self.slots_per_expert
        outs = [expert(slots[:, e * p:(e + 1) * p]) for e, expert in enumerate(self.experts)]
        self.record_load(torch.full((self.num_experts,), x.shape[0] * p, dtype=torch.long))
        return combine @ torch.cat(outs, dim=1)
