"""The one entry point: `create(arch, topology, num_classes, **options)` and the registry of
architectures it draws from.

An architecture registers an options dataclass (its own fields, e.g. `width`, plus the field
that places MoE layers, e.g. `moe_stages`) and a builder
`build(num_classes, topology: Topology, options) -> nn.Module`. Topologies register
themselves the same way (`models.topology.register_topology`); their options (`num_experts`,
`top_k`, ...) apply to every architecture.

    model = create("resnet20", "hard", num_classes=100, num_experts=8, top_k=2)
    model.axmoe_config == {"arch": "resnet20", "topology": "hard", "num_classes": 100,
                           "options": {...every option, defaults resolved...}}
    create(**model.axmoe_config)   # the same architecture again
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Callable

from torch import nn

from models.config import ModelConfigError, build_options, suggest, to_plain
from models.topology import TopologySpec, list_topologies, make_topology, topology_spec


@dataclass(frozen=True)
class ArchEntry:
    name: str                                   # registry name, e.g. "resnet20"
    options: type                               # dataclass of the arch's own options
    build: Callable[..., nn.Module]             # (num_classes, Topology, options) -> model
    moe_option: str                             # arch option placing the MoE layers
    tokens: bool = False                        # MoE layers see token sequences (ViT)
    description: str = ""                       # one line for listings

    def valid_options(self, topology: TopologySpec) -> tuple[str, ...]:
        """Names of the options `create(self.name, topology.name, ...)` accepts."""
        own = [f.name for f in dataclasses.fields(self.options)]
        if not topology.is_moe:
            own.remove(self.moe_option)
        return tuple(own) + topology.option_names(self.tokens)


_ARCHS: dict[str, ArchEntry] = {}


def register_arch(name: str, options: type, moe_option: str, tokens: bool = False,
                  description: str = "") -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator registering `build(num_classes, topology, options)` under `name`."""
    def wrap(build: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        _ARCHS[name] = ArchEntry(name, options, build, moe_option, tokens, description)
        return build
    return wrap


def _load_archs() -> None:
    # Importing the arch modules runs their `register_arch` decorators.
    from models import resnet, vgg, vit  # noqa: F401


def list_archs() -> list[str]:
    _load_archs()
    return list(_ARCHS)


def list_models() -> list[tuple[str, str]]:
    """Every valid (arch, topology) pair."""
    return [(a, t) for a in list_archs() for t in list_topologies()]


def arch_entry(arch: str) -> ArchEntry:
    _load_archs()
    if arch not in _ARCHS:
        raise ModelConfigError(f"unknown arch {arch!r}{suggest(arch, _ARCHS)} "
                               f"(valid: {', '.join(_ARCHS)})")
    return _ARCHS[arch]


def list_options(arch: str, topology: str = "dense") -> dict[str, Any]:
    """Option name -> default value (plain data) for `create(arch, topology, ...)`."""
    entry = arch_entry(arch)
    spec = topology_spec(topology)
    defaults = to_plain(entry.options())
    defaults.update(to_plain(spec.options()))
    return {k: defaults[k] for k in entry.valid_options(spec)}


def create(arch: str, topology: str = "dense", num_classes: int = 10,
           options: dict[str, Any] | None = None, **kwargs: Any) -> nn.Module:
    """Build a model.

    Args:
        arch: one of `list_archs()`: resnet20, vgg11_bn, vgg19_bn, vit_small.
        topology: one of `list_topologies()`: dense, hard, soft, cluster, and any other
            registered one.
        num_classes: size of the classifier output.
        options: arch and topology options as a dict (the form `axmoe_config` stores);
            merged with keyword options, which win.
        **kwargs: the same options as keywords, see `list_options(arch, topology)`.

    Returns:
        an `nn.Module` (with `models.moe.MoEModelMixin`) whose `axmoe_config` rebuilds it.

    Raises:
        ModelConfigError: unknown arch, topology or option, or an invalid value; the message
            names the valid choices.
    """
    entry = arch_entry(arch)
    spec = topology_spec(topology)
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ModelConfigError(f"num_classes must be a positive integer, got {num_classes!r}")
    merged = {**(options or {}), **kwargs}
    owner = f"{arch}/{topology}"
    valid = entry.valid_options(spec)
    unknown = [k for k in merged if k not in valid]
    if unknown:
        raise ModelConfigError(f"{owner}: unknown option {unknown[0]!r}{suggest(unknown[0], valid)} "
                               f"(valid options: {', '.join(valid) or 'none'})")
    topo_fields = set(spec.option_names(entry.tokens))
    topo_opts = {k: v for k, v in merged.items() if k in topo_fields}
    arch_opts = {k: v for k, v in merged.items() if k not in topo_fields}
    topo_obj = make_topology(topology, owner, **topo_opts)
    arch_options = build_options(entry.options, owner, arch_opts)
    model = entry.build(num_classes, topo_obj, arch_options)
    plain = to_plain(arch_options)
    plain.update(to_plain(topo_obj.options))
    model.axmoe_config = {"arch": arch, "topology": topology, "num_classes": num_classes,
                          "options": {k: plain[k] for k in valid}}
    return model

