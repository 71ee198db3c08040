"""`dense`: no MoE layer; every module is itself."""

from models.topology import TopologySpec, register_topology

DENSE = register_topology(TopologySpec(
    name="dense", description="no experts: the architecture as published",
    color="#333333", marker="s"))
