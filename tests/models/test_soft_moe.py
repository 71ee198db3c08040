"""models.soft_moe: Soft MoE slots against the paper's formulas."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from models.soft_moe import SoftMoEMlp


def test_matches_reference_formula():
    torch.manual_seed(0)
    layer = SoftMoEMlp(8, 16, num_experts=3, slots_per_expert=2).eval()
    x = torch.randn(2, 5, 8)
    y = layer(x)
    logits = torch.einsum("bmd,dn->bmn", F.normalize(x, dim=-1), layer.scale * F.normalize(layer.phi, dim=0))
    dispatch = logits.softmax(dim=1)      # over tokens
    combine = logits.softmax(dim=2)       # over slots
    slots = torch.einsum("bmn,bmd->bnd", dispatch, x)
    outs = torch.cat([layer.experts[e](slots[:, 2 * e:2 * e + 2]) for e in range(3)], dim=1)
    expected = torch.einsum("bmn,bnd->bmd", combine, outs)
    assert y.shape == (2, 5, 8)
    assert torch.allclose(y, expected, atol=1e-5)
    assert layer.expert_load().tolist() == [4, 4, 4]  # B * p slots per expert
    assert layer.aux_loss is None


def test_slots_are_convex_combinations_of_tokens():
    torch.manual_seed(1)
    layer = SoftMoEMlp(4, 8, num_experts=2)
    x = torch.randn(3, 6, 4)
    logits = F.normalize(x, dim=-1) @ (layer.scale * F.normalize(layer.phi, dim=0))
    assert torch.allclose(logits.softmax(dim=1).sum(1), torch.ones(3, 2))
    y = layer(x)
    y.sum().backward()
    assert layer.phi.grad is not None and layer.scale.grad is not None
