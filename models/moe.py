"""Mixture-of-Experts layers and the model-level view of them.

`MoELayer` routes whole rows of its input (images of a CNN feature map, tokens or images of
a ViT) through copies of one module (`MoEMlp`: the drop-in for a ViT block's MLP):

    z = mean of x over `pool_dims`        (R, D) routing features
    (G, M) = gate(z)                      (R, E) weights and mask
    y_r = sum_{e : M[r, e]} G[r, e] E_e(x_r)

with `models.dispatch.sparse_dispatch`, so a row only runs through the experts it is routed
to. Each layer keeps the per-expert row counts of its last forward (`expert_load`) and its
gate's auxiliary loss (`aux_loss`, hard MoE in training only).

`MoEModelMixin` gives every model in `models` the same view: `moe_layers()`,
`expert_load()`, `aux_loss()`, `trunk_parameters()` and `axmoe_config`.
"""

from __future__ import annotations

import itertools
from typing import Any, Callable, Iterator, Optional, Sequence, Type

import torch
from timm.layers import Mlp
from torch import Tensor, nn

from models.dispatch import sparse_dispatch
from models.gating import Router


def eager() -> bool:
    """True unless tracing, scripting or exporting: statistics are recorded only in eager
    mode, so exported graphs carry no side outputs."""
    return not (torch.jit.is_tracing() or torch.jit.is_scripting() or torch.compiler.is_compiling())


class MoEBase(nn.Module):
    """Common state of an MoE layer: `experts` (E modules), `gate`, last load, aux loss.

    The experts live in the `nn.ModuleList` named `experts`, so every module, weight and
    exported node of expert e carries the `experts.<e>` segment (`modelfile.naming`): how the
    exporter, the pass and the evaluator find experts."""

    experts: nn.ModuleList
    num_experts: int

    def __init__(self) -> None:
        super().__init__()
        self._load: Tensor | None = None

    def record_load(self, counts: Tensor) -> None:
        """counts (E,): rows (or slots) each expert processed in this forward."""
        if eager():
            self._load = counts.detach().to(torch.long)

    def expert_load(self) -> Tensor:
        """(E,) int64 rows routed to each expert in the last forward (zeros before any)."""
        if self._load is None:
            return torch.zeros(self.num_experts, dtype=torch.long)
        return self._load.cpu()

    @property
    def aux_loss(self) -> Tensor | None:
        gate = getattr(self, "gate", None)
        return getattr(gate, "aux_loss", None)


class MoELayer(MoEBase):
    """Row-routed MoE over `experts` (see module docstring).

    Args:
        experts: E modules with the same input and output shapes; an expert may define
            `out_shape(in_shape) -> tuple` when its output shape differs from its input's.
        gate: maps routing features (R, D) to a `models.gating.Routing`.
        pool_dims: dims of x averaged into the routing features: (2, 3) for feature maps
            (R, C, H, W), (1,) for token sequences routed per image (R, N, D), () for rows
            that are routed as they are (R, D).
    """

    def __init__(self, experts: Sequence[nn.Module], gate: Router,
                 pool_dims: tuple[int, ...] = (2, 3)) -> None:
        super().__init__()
        self.experts = nn.ModuleList(experts)
        self.num_experts = len(self.experts)
        self.gate = gate
        self.pool_dims = tuple(pool_dims)

    def routing_features(self, x: Tensor) -> Tensor:
        """x (R, ...) -> z (R, D)."""
        return x.mean(dim=self.pool_dims) if self.pool_dims else x

    def out_shape(self, in_shape: torch.Size) -> tuple:
        first = self.experts[0]
        if hasattr(first, "out_shape"):
            return tuple(first.out_shape(in_shape))
        return tuple(in_shape)

    def forward(self, x: Tensor) -> Tensor:
        routing = self.gate(self.routing_features(x))
        self.record_load(routing.mask.sum(dim=0))
        return sparse_dispatch(x, routing, self.experts, self.out_shape(x.shape))


class MoEMlp(MoELayer):
    """Drop-in for timm's `Mlp` (same constructor arguments): E `Mlp` experts behind a gate.

    x (B, N, d) -> (B, N, d). Per token: the B N tokens are the rows routed. Per image: the
    B images are, each routed on its mean token and sent whole to its expert(s).

    Args:
        in_features, hidden_features, out_features, act_layer, norm_layer, bias, drop: as
            timm's `Mlp`, for every expert.
        gate: builds the router from the feature size d.
        num_experts: E.
        per_image: route images instead of tokens.
    """

    def __init__(self, in_features: int, hidden_features: Optional[int] = None,
                 out_features: Optional[int] = None, act_layer: Type[nn.Module] = nn.GELU,
                 norm_layer: Optional[Type[nn.Module]] = None, bias: bool = True, drop: float = 0.0,
                 *, gate: Callable[[int], Router], num_experts: int = 4, per_image: bool = False,
                 device: Optional[torch.device] = None, dtype: Optional[torch.dtype] = None) -> None:
        experts = [Mlp(in_features, hidden_features, out_features, act_layer=act_layer,
                       norm_layer=norm_layer, bias=bias, drop=drop, device=device, dtype=dtype)
                   for _ in range(num_experts)]
        super().__init__(experts, gate(in_features), pool_dims=(1,) if per_image else ())
        self.per_image = per_image
        self.out_features = out_features or in_features

    def out_shape(self, in_shape: torch.Size) -> tuple:
        return tuple(in_shape[:-1]) + (self.out_features,)

    def forward(self, x: Tensor) -> Tensor:
        if self.per_image:
            return super().forward(x)
        rows = x.reshape(-1, x.shape[-1])
        return super().forward(rows).reshape(tuple(x.shape[:-1]) + (self.out_features,))


class MoEModelMixin:
    """Model-level access to the MoE layers; mixed into every model class of `models`."""

    #: construction config as plain data: {"arch", "topology", "num_classes", "options"}
    axmoe_config: dict[str, Any]

    def moe_layers(self) -> dict[str, MoEBase]:
        """Qualified module name -> MoE layer, in forward order."""
        return {name: m for name, m in self.named_modules() if isinstance(m, MoEBase)}  # type: ignore[attr-defined]

    def expert_load(self) -> dict[str, Tensor]:
        """Qualified name of each MoE layer -> (E,) int64 rows routed per expert in the last
        forward; empty for a dense model."""
        return {name: layer.expert_load() for name, layer in self.moe_layers().items()}

    def aux_loss(self) -> Tensor:
        """Sum of the gates' auxiliary (balancing) losses of the last training forward; a zero
        scalar when there are none."""
        losses = [layer.aux_loss for layer in self.moe_layers().values() if layer.aux_loss is not None]
        if not losses:
            return torch.zeros(())
        return torch.stack(losses).sum()

    def trunk_modules(self) -> list[nn.Module]:
        """Modules upstream of the first MoE layer (they alone decide its routing input)."""
        raise NotImplementedError

    def trunk_parameters(self) -> Iterator[nn.Parameter]:
        """Parameters of `trunk_modules()` (plus any the model holds directly, e.g. ViT's
        position embedding)."""
        return itertools.chain.from_iterable(m.parameters() for m in self.trunk_modules())
