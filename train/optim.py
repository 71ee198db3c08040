"""Optimiser construction: SGD with Nesterov momentum for CNNs, AdamW for ViT (auto).

Weight decay applies to weight matrices and kernels only; biases, norm scales, Soft MoE's
scalar scale and (for timm models) `no_weight_decay()` names are left undecayed. Frozen
parameters (the cluster trunk) are not given to the optimiser.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class OptimSettings:
    kind: str            # "sgd" or "adamw"
    lr: float            # peak learning rate
    weight_decay: float  # on weight matrices / kernels
    momentum: float      # SGD momentum (Nesterov)


def resolve_settings(optimizer: str, arch: str, lr: float | None, weight_decay: float | None,
                     momentum: float) -> OptimSettings:
    """Fill in `auto` and the per-optimiser defaults (0.1 / 5e-4 SGD, 1e-3 / 0.05 AdamW)."""
    kind = optimizer if optimizer != "auto" else ("adamw" if arch.startswith("vit") else "sgd")
    default_lr, default_wd = (0.1, 5e-4) if kind == "sgd" else (1e-3, 0.05)
    return OptimSettings(kind, lr if lr is not None else default_lr,
                         weight_decay if weight_decay is not None else default_wd, momentum)


def make_optimizer(model: nn.Module, settings: OptimSettings) -> torch.optim.Optimizer:
    skip = set(getattr(model, "no_weight_decay", lambda: set())())
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        (no_decay if param.ndim <= 1 or name in skip else decay).append(param)
    groups = [{"params": decay, "weight_decay": settings.weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    if settings.kind == "sgd":
        return torch.optim.SGD(groups, lr=settings.lr, momentum=settings.momentum, nesterov=True)
    if settings.kind == "adamw":
        return torch.optim.AdamW(groups, lr=settings.lr)
    raise ValueError(f"unknown optimizer {settings.kind!r} (valid: sgd, adamw)")
