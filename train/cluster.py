"""The Cluster MoE recipe, phase 2 set-up: centroids from k-means on a trained dense trunk.

1. Train the dense model (phase 1, `train.run`).
2. Build the cluster model and copy the dense weights into it: every expert equals the dense
   module it replaces (`models.upcycle`), so the model still computes the dense function,
   whatever the routing.
3. Run training images (no augmentation, eval mode) through it and collect, at every MoE
   layer, the routing features its gate sees: the globally pooled stage input (CNN) or the
   mean token (ViT), z (N, D).
4. k-means with K = E on each layer's z; the centroids become the layer's `CentroidGate`
   buffer, so an input goes to the expert of its nearest centroid,
   argmax_e 2 mu_e . z - |mu_e|^2.
5. Train the experts (phase 2, `train.run`), the trunk upstream of the first MoE layer
   frozen by default so routing stays that of the fitted centroids.
"""

from __future__ import annotations

from typing import Any, Iterable

import torch
from torch import Tensor, nn

from models.gating import CentroidGate
from train.kmeans import kmeans


@torch.no_grad()
def routing_features(model: nn.Module, batches: Iterable[tuple[Tensor, Tensor]],
                     limit: int) -> dict[str, Tensor]:
    """Layer name -> z (N, D), the gate inputs of each MoE layer for the first `limit` rows
    of `batches` (CPU, float)."""
    layers = model.moe_layers()
    captured: dict[str, list[Tensor]] = {name: [] for name in layers}
    hooks = [layer.gate.register_forward_pre_hook(
        lambda module, inputs, name=name: captured[name].append(inputs[0].detach().float().cpu()))
        for name, layer in layers.items()]
    model.eval()
    seen = 0
    try:
        for x, _ in batches:
            model(x)
            seen += x.shape[0]
            if seen >= limit:
                break
    finally:
        for hook in hooks:
            hook.remove()
    return {name: torch.cat(parts)[:limit] for name, parts in captured.items()}


def fit_centroids(model: nn.Module, batches: Iterable[tuple[Tensor, Tensor]], samples: int,
                  seed: int = 0) -> dict[str, Any]:
    """k-means on each MoE layer's routing features; sets the centroids in place.

    Returns:
        per layer: inertia, Lloyd iterations, cluster sizes, number of points.
    """
    features = routing_features(model, batches, samples)
    report: dict[str, Any] = {}
    for name, layer in model.moe_layers().items():
        if not isinstance(layer.gate, CentroidGate):
            raise TypeError(f"{name}: not a cluster MoE layer (gate {type(layer.gate).__name__})")
        z = features[name]
        result = kmeans(z, layer.num_experts, seed=seed)
        layer.gate.set_centroids(result.centroids.to(layer.gate.centroids.device))
        sizes = torch.bincount(result.labels, minlength=layer.num_experts)
        report[name] = {"points": int(z.shape[0]), "dim": int(z.shape[1]),
                        "inertia": result.inertia, "iterations": result.iterations,
                        "cluster_sizes": sizes.tolist()}
    return report
