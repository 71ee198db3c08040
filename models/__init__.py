"""axmoe models: Dense, Hard, Soft and Cluster MoE on ResNet-20, VGG11_bn, VGG19_bn, ViT-Small.

    import models
    models.list_archs()          # ['resnet20', 'vgg11_bn', 'vgg19_bn', 'vit_small']
    models.list_topologies()     # ['dense', 'hard', 'soft', 'cluster'], then any registered
    models.list_options("vit_small", "hard")   # option -> default
    net = models.create("resnet20", "hard", num_classes=10, num_experts=4, top_k=1)
    logits = net(images)         # images (B, 3, 32, 32) float, normalised
    net.expert_load()            # {"stages.2": tensor([n0, n1, n2, n3])} rows per expert, last batch
    net.aux_loss()               # balancing loss of the last training forward
    models.create(**net.axmoe_config)   # rebuilds the architecture

Modules: `registry` (create, architectures), `topology` (the topology registry and spec),
`topologies/` (one module per topology: dense, hard, soft, cluster), `gating` (routers, all
`Router`s), `dispatch` (sparse expert dispatch), `moe` (MoE layers, model mixin), `soft_moe`
(Soft MoE slots), `resnet`, `vgg`, `vit` (architectures), `upcycle` (dense -> MoE weights); data:
`data` (Fashion-MNIST IDX), `cifar` (CIFAR-100 pickles), `tiny_imagenet` (folder format),
`datasets` (registry, presentation, normalisation), `loader` (batches, augmentation).

Attributes load lazily, so `python -m models.data` does not import torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "create": "models.registry",
    "list_archs": "models.registry",
    "list_topologies": "models.topology",
    "list_models": "models.registry",
    "list_options": "models.registry",
    "ModelConfigError": "models.config",
    "Topology": "models.topology",
    "TopologySpec": "models.topology",
    "register_topology": "models.topology",
    "topology_spec": "models.topology",
    "Router": "models.gating",
    "AUX_LOSS_WEIGHT": "models.gating",
    "MoELayer": "models.moe",
    "MoEBase": "models.moe",
    "load_dense_into_moe": "models.upcycle",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'models' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
