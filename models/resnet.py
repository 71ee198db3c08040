"""CIFAR-style ResNet (He et al. 2016, section 4.2), ResNet-20: depth 6n + 2 with n = 3.

    stem:   conv3x3(in_chans -> w) - BN - ReLU                       (B, w, H, W)
    stage0: n BasicBlocks, w channels, stride 1                     (B, w, H, W)
    stage1: n BasicBlocks, 2w channels, first stride 2              (B, 2w, H/2, W/2)
    stage2: n BasicBlocks, 4w channels, first stride 2              (B, 4w, H/4, W/4)
    head:   global average pool - linear(4w -> num_classes)

BasicBlock: y = ReLU(BN(conv3x3(ReLU(BN(conv3x3(x))))) + shortcut(x)), with a 1x1 conv + BN
shortcut when the shape changes (as chenyaofo/pytorch-cifar-models). w = 16 gives the
0.27 M-parameter ResNet-20. In an MoE topology each stage listed in `moe_stages` (default
the last) becomes an MoE layer whose experts are copies of that stage, routed per image on
the globally pooled stage input.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models.config import ModelConfigError
from models.moe import MoEModelMixin
from models.registry import register_arch
from models.topology import Topology

NUM_STAGES = 3


@dataclass(frozen=True)
class ResNetOptions:
    width: int = 16                      # w: channels of stage 0 (stages have w, 2w, 4w)
    in_chans: int = 3                    # input image channels
    moe_stages: tuple[int, ...] = (2,)   # stages (0, 1, 2) whose copies are the experts

    def __post_init__(self) -> None:
        if self.width < 1 or self.in_chans < 1:
            raise ModelConfigError(f"width and in_chans must be >= 1, got {self.width}, {self.in_chans}")
        check_stages(self.moe_stages, NUM_STAGES)


def check_stages(stages: tuple[int, ...], num_stages: int) -> None:
    """MoE stages must be distinct indices in 0..num_stages-1, at least one."""
    if not stages or len(set(stages)) != len(stages) or not all(0 <= s < num_stages for s in stages):
        raise ModelConfigError(f"moe_stages must be distinct stage indices in 0..{num_stages - 1}, "
                               f"got {list(stages)}")


def _conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)


class BasicBlock(nn.Module):
    """Two 3x3 convs with a residual connection; (B, cin, H, W) -> (B, cout, H/s, W/s)."""

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = _conv3x3(cin, cout, stride)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = _conv3x3(cout, cout)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False),
                                          nn.BatchNorm2d(cout))

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class Stage(nn.Sequential):
    """`blocks` BasicBlocks, the first with `stride`; (B, cin, H, W) -> (B, cout, H', W')."""

    def __init__(self, cin: int, cout: int, blocks: int, stride: int) -> None:
        super().__init__(*[BasicBlock(cin if i == 0 else cout, cout, stride if i == 0 else 1)
                           for i in range(blocks)])
        self.out_channels = cout
        self.stride = stride

    def out_shape(self, in_shape: torch.Size) -> tuple:
        """Output shape for input (B, C, H, W): a 3x3 conv with padding 1 and stride s gives
        floor((H - 1) / s) + 1."""
        b, _, h, w = in_shape
        return (b, self.out_channels, (h - 1) // self.stride + 1, (w - 1) // self.stride + 1)


class CifarResNet(MoEModelMixin, nn.Module):
    """ResNet-(6n+2) for small images; see the module docstring.

    Args:
        num_classes: classifier outputs.
        topology: how the stages in `moe_stages` become MoE layers.
        depth: 6n + 2.
        width: w, channels of the first stage.
        in_chans: input channels.
        moe_stages: stage indices turned into MoE layers (ignored for dense).
    """

    def __init__(self, num_classes: int, topology: Topology, depth: int = 20, width: int = 16,
                 in_chans: int = 3, moe_stages: tuple[int, ...] = (2,)) -> None:
        super().__init__()
        if (depth - 2) % 6 != 0:
            raise ModelConfigError(f"ResNet depth must be 6n + 2, got {depth}")
        n = (depth - 2) // 6
        self.moe_stages = tuple(moe_stages)
        self.stem = nn.Sequential(_conv3x3(in_chans, width), nn.BatchNorm2d(width), nn.ReLU(inplace=True))
        stages = []
        cin = width
        for i in range(NUM_STAGES):
            cout, stride = width * 2 ** i, 1 if i == 0 else 2
            build = partial(Stage, cin, cout, n, stride)
            stages.append(topology.layer(build, cin) if i in self.moe_stages else build())
            cin = cout
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, num_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward_features(self, x: Tensor) -> Tensor:
        """(B, in_chans, H, W) -> (B, 4w, H/4, W/4)."""
        return self.stages(self.stem(x))

    def forward(self, x: Tensor) -> Tensor:
        """(B, in_chans, H, W) -> logits (B, num_classes)."""
        return self.fc(torch.flatten(self.pool(self.forward_features(x)), 1))

    def trunk_modules(self) -> list[nn.Module]:
        return [self.stem, *self.stages[:min(self.moe_stages)]]


@register_arch("resnet20", ResNetOptions, moe_option="moe_stages",
               description="CIFAR ResNet-20 (0.27 M params at width 16); experts = copies of a stage")
def resnet20(num_classes: int, topology: Topology, options: ResNetOptions) -> CifarResNet:
    return CifarResNet(num_classes, topology, 20, options.width, options.in_chans, options.moe_stages)
