"""Topologies: how a module becomes an MoE layer, registered like architectures are.

A topology is one module in `models/topologies/` (dense, hard, soft, cluster, in that
order) that calls `register_topology(TopologySpec(...))`. The spec is the one place that
says what the topology is: its options (names, defaults, checks), its router class, how it
turns a CNN stage and a ViT block's MLP into an MoE layer, how training starts it, and how
plots draw it. `models.create(arch, name, ...)` then builds it on every architecture, and
`models.list_topologies()` lists it.

What every topology keeps to, so later stages work on it without knowing it
(tests/models/test_topology_registry.py checks each registered one):

- Experts: an MoE layer is a `models.moe.MoEBase` whose E experts sit in its
  `nn.ModuleList` named `experts`. Every module, weight and exported node of expert e
  therefore carries the `experts.<e>` segment of `modelfile.naming`, and the exporter, the
  pass (per-expert plans) and the evaluator (expert load) find experts by that name alone.
- Router: its gate is a `models.gating.Router`. The exporter keeps every node inside a Router
  in float, so a new router needs no list updated.
- Routing cost: there is nothing to declare. Active MACs, normalised power and expert load
  come from the rows each MAC layer of the exported graph actually sees on real data
  (`eval.macs`): a router's rows and each expert's rows. So top-k (hard), all experts (soft)
  and one expert (cluster) are all measured, never assumed. The dense reference is the dense
  model's own count, which a sweep passes. It is inferred from the router's rows only when
  none is given, and that inference is wrong for a topology whose experts see other rows than
  the dense module would, such as Soft MoE slots on ViT (`eval.macs.MacCounter.dense_per_image`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from functools import partial
from typing import Any, Callable

from torch import nn

from models.config import ModelConfigError, coerce_options, suggest
from models.gating import CentroidGate, Router
from models.moe import MoELayer, MoEMlp


@dataclass(frozen=True)
class NoOptions:
    """Options of a topology that has none (dense)."""


@dataclass(frozen=True)
class MoEOptions:
    """Options every MoE topology has; a topology's options dataclass derives from it."""

    num_experts: int = 4            # E, experts per MoE layer

    def __post_init__(self) -> None:
        if self.num_experts < 1:
            raise ModelConfigError(f"num_experts must be >= 1, got {self.num_experts}")


@dataclass(frozen=True)
class TopologySpec:
    """What a topology is; see the module docstring. Give the builders for an MoE topology
    and leave them unset for one without MoE layers (dense)."""

    name: str                                                   # registry name, e.g. "hard"
    description: str                                            # one line for listings
    color: str                                                  # its curves in plots (eval.plots), e.g. "#1f77b4"
    marker: str                                                 # its matplotlib marker in plots, e.g. "o"
    options: type = NoOptions                                   # frozen dataclass: options with defaults and checks
    router: type[Router] | None = None                          # class of its gate; None: no MoE layers
    gate: Callable[[Any, int], Router] | None = None            # (options, D) -> router over D routing features
    cnn_layer: Callable[..., nn.Module] | None = None           # (Topology, build, D, pool_dims) -> MoE of a CNN stage
    vit_mlp: Callable[..., Callable[..., nn.Module]] | None = None  # Topology -> timm `mlp_layer` of an MoE block
    token_options: tuple[str, ...] = ()                         # options only archs routing tokens take (ViT)
    dense_trunk_init: bool = False                              # training runs a dense model first (train.run_cluster)

    def __post_init__(self) -> None:
        if not dataclasses.is_dataclass(self.options):
            raise TypeError(f"topology {self.name!r}: options must be a dataclass, got {self.options!r}")
        builders = {"gate": self.gate, "cnn_layer": self.cnn_layer, "vit_mlp": self.vit_mlp}
        if self.router is None:
            given = [k for k, v in builders.items() if v is not None]
            if given or self.dense_trunk_init:
                raise TypeError(f"topology {self.name!r} has no router, so no MoE layer to build "
                                f"({', '.join(given) or 'dense_trunk_init'} given)")
            return
        if not issubclass(self.router, Router):
            raise TypeError(f"topology {self.name!r}: router {self.router.__name__} is not a "
                            f"models.gating.Router")
        missing = [k for k, v in builders.items() if v is None]
        if missing:
            raise TypeError(f"topology {self.name!r} has a router but no {', '.join(missing)}")
        if not issubclass(self.options, MoEOptions):
            raise TypeError(f"topology {self.name!r}: options must derive from MoEOptions (num_experts)")
        # The dense-trunk recipe sets k-means centroids (train.cluster.fit_centroids).
        if self.dense_trunk_init and not issubclass(self.router, CentroidGate):
            raise TypeError(f"topology {self.name!r}: dense_trunk_init fits k-means centroids, "
                            f"its router must be a CentroidGate")
        unknown = set(self.token_options) - set(self.option_names(tokens=True))
        if unknown:
            raise TypeError(f"topology {self.name!r}: token_options {sorted(unknown)} are not options")

    @property
    def is_moe(self) -> bool:
        return self.router is not None

    def option_names(self, tokens: bool) -> tuple[str, ...]:
        """Names of the options `create` accepts, in field order; `tokens`: the arch routes
        tokens (ViT), so token-only options apply too."""
        return tuple(f.name for f in dataclasses.fields(self.options)
                     if f.init and (tokens or f.name not in self.token_options))


@dataclass(frozen=True)
class Topology:
    """A registered topology with its options resolved: what an architecture's builder gets."""

    spec: TopologySpec      # what the topology is
    options: Any            # an instance of `spec.options`

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def is_moe(self) -> bool:
        return self.spec.is_moe

    def gate(self, dim: int) -> Router:
        """A router over D = `dim` routing features."""
        if self.spec.gate is None:
            raise ModelConfigError(f"topology {self.name!r} has no gate")
        return self.spec.gate(self.options, dim)

    def layer(self, build: Callable[[], nn.Module], dim: int,
              pool_dims: tuple[int, ...] = (2, 3)) -> nn.Module:
        """`build()` without MoE layers, else the topology's MoE layer over copies of it.

        Args:
            build: makes one (freshly initialised) module, e.g. a CNN stage.
            dim: D, size of the routing features (channels of the module's input).
            pool_dims: dims of the input averaged into routing features.
        """
        if self.spec.cnn_layer is None:
            return build()
        return self.spec.cnn_layer(self, build, dim, pool_dims)

    def mlp_layer(self) -> Callable[..., nn.Module]:
        """The `mlp_layer` (a class, partially applied) for a ViT block's MoE MLP."""
        if self.spec.vit_mlp is None:
            raise ModelConfigError(f"topology {self.name!r} has no MoE MLP")
        return self.spec.vit_mlp(self)


def routed_layer(topology: Topology, build: Callable[[], nn.Module], dim: int,
                 pool_dims: tuple[int, ...]) -> MoELayer:
    """`cnn_layer` of a routed topology: E independently built copies of `build()` behind
    `topology.gate(dim)`, the experts built (and initialised) before the gate."""
    experts = [build() for _ in range(topology.options.num_experts)]
    return MoELayer(experts, topology.gate(dim), pool_dims)


def routed_mlp(per_image: bool) -> Callable[[Topology], Callable[..., nn.Module]]:
    """`vit_mlp` of a routed topology: `models.moe.MoEMlp` routing tokens, or whole images on
    their mean token (`per_image`)."""
    def mlp_layer(topology: Topology) -> Callable[..., nn.Module]:
        return partial(MoEMlp, gate=topology.gate, num_experts=topology.options.num_experts,
                       per_image=per_image)
    return mlp_layer


_TOPOLOGIES: dict[str, TopologySpec] = {}


def _load_topologies() -> None:
    # Importing the built-in topology modules runs their `register_topology` calls; during
    # that import this returns at once (the package is already in sys.modules).
    import models.topologies  # noqa: F401


def register_topology(spec: TopologySpec) -> TopologySpec:
    """Add `spec` to the registry, after the built-in ones; returns it."""
    _load_topologies()
    if spec.name in _TOPOLOGIES:
        raise ValueError(f"topology {spec.name!r} is already registered")
    _TOPOLOGIES[spec.name] = spec
    return spec


def unregister_topology(name: str) -> None:
    """Remove a topology registered with `register_topology` (e.g. one a test added)."""
    topology_spec(name)
    del _TOPOLOGIES[name]


def list_topologies() -> list[str]:
    """Registered topology names in registration order: dense, hard, soft, cluster, ..."""
    _load_topologies()
    return list(_TOPOLOGIES)


def topology_spec(name: str) -> TopologySpec:
    """The spec registered as `name`.

    Raises:
        ModelConfigError: no such topology; the message names the registered ones.
    """
    _load_topologies()
    if name not in _TOPOLOGIES:
        raise ModelConfigError(f"unknown topology {name!r}{suggest(name, _TOPOLOGIES)} "
                               f"(valid: {', '.join(_TOPOLOGIES)})")
    return _TOPOLOGIES[name]


def make_topology(name: str, owner: str | None = None, **options: Any) -> Topology:
    """`Topology` `name` with its options type-checked and defaults filled in.

    Args:
        name: a registered topology.
        owner: what the options belong to, for messages (default: the topology's name).
        **options: the topology's own options, e.g. `num_experts=8, top_k=2`.
    """
    spec = topology_spec(name)
    values = coerce_options(spec.options, owner or name, options)
    return Topology(spec, spec.options(**values))
