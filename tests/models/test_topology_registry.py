"""models.topology: the topology registry. Every registered topology builds on every arch,
routes through a `Router`, and names its experts `experts.<e>`; a new topology is one
registration away from `models.create`."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

import models
from models.config import ModelConfigError
from models.gating import AUX_LOSS_WEIGHT, CentroidGate, Router, Routing, SoftmaxGate, TopKGate
from models.moe import MoEBase
from models.topology import (MoEOptions, TopologySpec, list_topologies, register_topology,
                             routed_layer, routed_mlp, topology_spec, unregister_topology)
from modelfile.naming import split_expert

PAIRS = [(a, t) for t in list_topologies() for a in models.list_archs()]


def test_builtin_topologies_in_registration_order():
    assert list_topologies() == ["dense", "hard", "soft", "cluster"]
    specs = [topology_spec(t) for t in list_topologies()]
    assert [s.name for s in specs] == list_topologies()
    assert len({s.color for s in specs}) == len(specs) and len({s.marker for s in specs}) == len(specs)
    assert [s.is_moe for s in specs] == [False, True, True, True]
    assert [t for t in list_topologies() if topology_spec(t).dense_trunk_init] == ["cluster"]


@pytest.mark.parametrize("topology", list_topologies())
def test_options_have_one_default_each(topology):
    spec = topology_spec(topology)
    defaults = {f.name: f.default for f in dataclasses.fields(spec.options)}
    for arch, tokens in (("vit_small", True), ("resnet20", False)):
        arch_own = set(models.list_options(arch, "dense")) | {models.registry.arch_entry(arch).moe_option}
        shared = {k: v for k, v in models.list_options(arch, topology).items() if k not in arch_own}
        assert shared == {k: v for k, v in defaults.items() if tokens or k not in spec.token_options}


@pytest.mark.parametrize("arch, topology", PAIRS)
def test_every_topology_builds_routes_through_routers_and_names_experts(arch, topology, small, sizes):
    spec = topology_spec(topology)
    torch.manual_seed(0)
    model = models.create(arch, topology, num_classes=3, **small[arch])
    logits = model(torch.randn(2, 3, sizes[arch], sizes[arch]))
    assert logits.shape == (2, 3) and torch.isfinite(logits).all()
    routers = [m for m in model.modules() if isinstance(m, Router)]
    layers = model.moe_layers()
    if not spec.is_moe:
        assert not routers and not layers
        assert not any(split_expert(n) for n, _ in model.named_parameters())
        return
    assert issubclass(spec.router, Router)
    assert layers and all(isinstance(r, spec.router) for r in routers)
    assert isinstance(spec.gate(spec.options(), 8), spec.router)
    for name, layer in layers.items():
        assert isinstance(layer, MoEBase)
        found = {}
        for pname, _ in layer.named_parameters(prefix=name):
            split = split_expert(pname)
            if split is not None:
                found.setdefault(split[0], set()).add(split[1])
        # experts.<e> sits right under the layer, for all E experts
        assert found == {name + ".": set(range(layer.num_experts))}
        gate = getattr(layer, "gate", None)
        if gate is not None:
            assert isinstance(gate, spec.router)
            assert not any(split_expert(n) for n, _ in gate.named_parameters(prefix=f"{name}.gate"))


@pytest.mark.parametrize("topology", [t for t in list_topologies() if topology_spec(t).is_moe])
def test_exported_node_names_carry_the_experts(topology, small):
    from export.fp32 import export_fp32
    torch.manual_seed(0)
    model = models.create("resnet20", topology, num_classes=3, num_experts=3, **small["resnet20"])
    proto = export_fp32(model, torch.randn(2, 3, 32, 32))
    experts: dict[str, set[int]] = {}
    for node in proto.graph.node:
        split = split_expert(node.name)
        if split is not None:
            experts.setdefault(split[0], set()).add(split[1])
    assert experts == {"/stages/stages.2/": {0, 1, 2}}


def test_one_aux_loss_default():
    assert TopKGate(4, 2).aux_loss_weight == AUX_LOSS_WEIGHT
    assert models.list_options("resnet20", "hard")["aux_loss_weight"] == AUX_LOSS_WEIGHT
    model = models.create("resnet20", "hard", width=4)
    assert model.stages[2].gate.aux_loss_weight == AUX_LOSS_WEIGHT


@pytest.mark.parametrize("gate", [TopKGate(4, 2), SoftmaxGate(4, 2), CentroidGate(4, 2)])
def test_every_gate_is_a_router(gate):
    assert isinstance(gate, Router) and gate.num_experts == 2 and gate.aux_loss is None


class StripeGate(Router):
    """Row r runs expert r mod E with combine weight `weight`: a router with no parameters."""

    def __init__(self, dim: int, num_experts: int, weight: float) -> None:
        super().__init__(num_experts)
        self.weight = weight

    def init_weights(self) -> None:
        pass

    def forward(self, z: Tensor) -> Routing:
        rows = torch.arange(z.shape[0], device=z.device)
        mask = F.one_hot(rows % self.num_experts, self.num_experts).bool()
        return Routing(mask.to(z.dtype) * self.weight, mask)


@dataclass(frozen=True)
class StripeOptions(MoEOptions):
    weight: float = 1.0         # combine weight of the chosen expert


@pytest.fixture
def stripe():
    """A fifth topology, registered for one test: the whole of what a new one needs."""
    spec = register_topology(TopologySpec(
        name="stripe", description="row r to expert r mod E", color="#8c564b", marker="v",
        options=StripeOptions, router=StripeGate,
        gate=lambda options, dim: StripeGate(dim, options.num_experts, options.weight),
        cnn_layer=routed_layer, vit_mlp=routed_mlp(per_image=False)))
    yield spec
    unregister_topology("stripe")


def test_a_new_topology_is_one_registration(stripe, small, sizes):
    assert list_topologies() == ["dense", "hard", "soft", "cluster", "stripe"]
    assert ("resnet20", "stripe") in models.list_models()
    assert models.list_options("resnet20", "stripe") == {**models.list_options("resnet20", "cluster"), "weight": 1.0}
    torch.manual_seed(0)
    model = models.create("resnet20", "stripe", num_classes=3, num_experts=2, weight=0.5, **small["resnet20"])
    assert model.axmoe_config["options"]["weight"] == 0.5
    x = torch.randn(5, 3, 32, 32)
    model.eval()
    y = model(x)
    assert y.shape == (5, 3) and model.aux_loss() == 0
    assert model.expert_load()["stages.2"].tolist() == [3, 2]
    again = models.create(**model.axmoe_config).eval()
    again.load_state_dict(model.state_dict())
    assert torch.equal(again(x), y)
    # rows 0, 2, 4 run expert 0 and rows 1, 3 expert 1, each output scaled by the weight
    layer = model.stages[2]
    with torch.no_grad():
        feats = model.stages[:2](model.stem(x))
        out = layer(feats)
        assert torch.equal(out[0::2], 0.5 * layer.experts[0](feats[0::2]))
        assert torch.equal(out[1::2], 0.5 * layer.experts[1](feats[1::2]))
    vit = models.create("vit_small", "stripe", num_classes=3, num_experts=3, **small["vit_small"])
    assert vit(torch.randn(2, 3, sizes["vit_small"], sizes["vit_small"])).shape == (2, 3)
    tokens = 2 * ((sizes["vit_small"] // 4) ** 2 + 1)
    assert all(v.sum() == tokens for v in vit.expert_load().values())
    with pytest.raises(ValueError, match="already registered"):
        register_topology(stripe)


def test_unregistered_topology_is_gone(stripe):
    unregister_topology("stripe")
    try:
        with pytest.raises(ModelConfigError, match="dense, hard, soft, cluster\\)$"):
            models.create("resnet20", "stripe")
        assert list_topologies() == ["dense", "hard", "soft", "cluster"]
    finally:
        register_topology(stripe)


@pytest.mark.parametrize("fields, message", [
    ({"router": StripeGate}, "has a router but no gate, cnn_layer, vit_mlp"),
    ({"gate": lambda o, d: None}, "has no router"),
    ({"router": torch.nn.Linear, "gate": lambda o, d: None, "cnn_layer": routed_layer,
      "vit_mlp": routed_mlp(False)}, "is not a models.gating.Router"),
    ({"router": StripeGate, "gate": lambda o, d: None, "cnn_layer": routed_layer,
      "vit_mlp": routed_mlp(False), "options": StripeOptions, "dense_trunk_init": True}, "CentroidGate"),
    ({"router": StripeGate, "gate": lambda o, d: None, "cnn_layer": routed_layer,
      "vit_mlp": routed_mlp(False)}, "derive from MoEOptions"),
    ({"router": StripeGate, "gate": lambda o, d: None, "cnn_layer": routed_layer,
      "vit_mlp": routed_mlp(False), "options": StripeOptions, "token_options": ("slots",)}, "not options"),
    ({"options": dict}, "must be a dataclass"),
])
def test_inconsistent_specs_are_refused(fields, message):
    with pytest.raises(TypeError, match=message):
        TopologySpec(name="bad", description="", color="#000000", marker="x", **fields)
