"""`cluster`: E copies behind nearest-centroid routing (`models.gating.CentroidGate`), each
input to one expert. Training runs a dense model first: the experts start from its weights
(`models.upcycle`) and the centroids from k-means on its routing features (`train.cluster`).
On ViT, images are routed whole, on their mean token."""

from __future__ import annotations

from models.gating import CentroidGate
from models.topology import MoEOptions, TopologySpec, register_topology, routed_layer, routed_mlp


def centroid_gate(options: MoEOptions, dim: int) -> CentroidGate:
    return CentroidGate(dim, options.num_experts)


CLUSTER = register_topology(TopologySpec(
    name="cluster", description="nearest k-means centroid of a dense trunk's features; one expert per input",
    color="#2ca02c", marker="D", options=MoEOptions, router=CentroidGate, gate=centroid_gate,
    cnn_layer=routed_layer, vit_mlp=routed_mlp(per_image=True), dense_trunk_init=True))
