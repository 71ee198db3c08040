"""ViT-Small (Dosovitskiy et al. 2021; timm's `VisionTransformer`) with MoE MLPs.

    patches: (B, C, S, S) -> (B, N, d), N = (S / P)^2, plus a class token; d = 384
    12 blocks: x = x + Attn(LN(x)); x = x + MLP(LN(x))      (6 heads, MLP ratio 4)
    head: LN -> class token -> linear(d, num_classes)

Image and patch size are options (64/8 for Tiny ImageNet, 32/4 for 32x32 data). MoE layers
replace the MLP of the blocks in `moe_blocks` (default every second block: 1, 3, 5, ...)
through timm's own extension points: `block_fn` builds each `Block` with its depth index, and
hands the MoE class to the chosen blocks as their `mlp_layer`. The topology says which class
(`TopologySpec.vit_mlp`, in `models/topologies/`): hard routes each token (B N rows of d)
through `models.moe.MoEMlp`, cluster each image (its N tokens together, on its mean token),
and soft uses `models.soft_moe.SoftMoEMlp` (Soft MoE slots).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Callable, Iterator, Optional, Type

from timm.models.vision_transformer import Block, VisionTransformer
from torch import nn

from models.config import ModelConfigError
from models.moe import MoEModelMixin
from models.registry import register_arch
from models.topology import Topology


@dataclass(frozen=True)
class ViTOptions:
    img_size: int = 32                          # S, input height and width
    patch_size: int = 4                         # P, patch height and width (S % P == 0)
    embed_dim: int = 384                        # d
    depth: int = 12                             # number of transformer blocks
    num_heads: int = 6                          # attention heads (d % heads == 0)
    mlp_ratio: float = 4.0                      # MLP hidden size / d
    in_chans: int = 3                           # input image channels
    drop_path_rate: float = 0.1                 # stochastic depth, linear over blocks
    moe_blocks: Optional[tuple[int, ...]] = None  # blocks with an MoE MLP; None: 1, 3, 5, ...

    def __post_init__(self) -> None:
        if self.img_size < 1 or self.patch_size < 1 or self.img_size % self.patch_size:
            raise ModelConfigError(f"img_size must be a positive multiple of patch_size, got "
                                   f"{self.img_size} and {self.patch_size}")
        if self.depth < 1 or self.num_heads < 1 or self.embed_dim % self.num_heads:
            raise ModelConfigError(f"need depth >= 1 and embed_dim divisible by num_heads, got "
                                   f"depth {self.depth}, embed_dim {self.embed_dim}, heads {self.num_heads}")
        if not self.mlp_ratio > 0 or self.in_chans < 1 or not 0 <= self.drop_path_rate < 1:
            raise ModelConfigError("need mlp_ratio > 0, in_chans >= 1, 0 <= drop_path_rate < 1")
        blocks = self.moe_blocks
        if blocks is None:
            blocks = tuple(range(1, self.depth, 2)) or (0,)
        if not blocks or len(set(blocks)) != len(blocks) or not all(0 <= b < self.depth for b in blocks):
            raise ModelConfigError(f"moe_blocks must be distinct block indices in 0..{self.depth - 1}, "
                                   f"got {list(blocks)}")
        object.__setattr__(self, "moe_blocks", tuple(sorted(blocks)))


class MoEBlockFn:
    """timm `block_fn`: a `Block` whose `mlp_layer` is `moe_mlp` at the depths in `moe_blocks`."""

    def __init__(self, moe_blocks: tuple[int, ...], moe_mlp: Callable[..., nn.Module]) -> None:
        self.moe_blocks = set(moe_blocks)
        self.moe_mlp = moe_mlp

    def __call__(self, *, depth: int, mlp_layer: Type[nn.Module], **kwargs) -> Block:
        chosen = self.moe_mlp if depth in self.moe_blocks else mlp_layer
        return Block(depth=depth, mlp_layer=chosen, **kwargs)


class AxViT(MoEModelMixin, VisionTransformer):
    """timm `VisionTransformer` with MoE MLPs in `options.moe_blocks`; see module docstring."""

    def __init__(self, num_classes: int, topology: Topology, options: ViTOptions) -> None:
        moe_blocks = tuple(options.moe_blocks or ())
        block_fn = MoEBlockFn(moe_blocks, topology.mlp_layer()) if topology.is_moe else Block
        super().__init__(img_size=options.img_size, patch_size=options.patch_size,
                         in_chans=options.in_chans, num_classes=num_classes,
                         embed_dim=options.embed_dim, depth=options.depth,
                         num_heads=options.num_heads, mlp_ratio=options.mlp_ratio, qkv_bias=True,
                         drop_path_rate=options.drop_path_rate, block_fn=block_fn)
        self.moe_blocks = moe_blocks

    def trunk_modules(self) -> list[nn.Module]:
        return [self.patch_embed, *self.blocks[:min(self.moe_blocks)]]

    def trunk_parameters(self) -> Iterator[nn.Parameter]:
        tokens = [p for p in (self.cls_token, self.reg_token, self.pos_embed) if isinstance(p, nn.Parameter)]
        return itertools.chain(tokens, super().trunk_parameters())


@register_arch("vit_small", ViTOptions, moe_option="moe_blocks", tokens=True,
               description="timm ViT-Small (d 384, 12 blocks, 6 heads); experts replace block MLPs")
def vit_small(num_classes: int, topology: Topology, options: ViTOptions) -> AxViT:
    return AxViT(num_classes, topology, options)
