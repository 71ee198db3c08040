"""CIFAR-style VGG with batch norm (Simonyan & Zisserman 2015; layout of
chenyaofo/pytorch-cifar-models): VGG11_bn and VGG19_bn for 32x32 inputs.

Five stages, each `conv3x3 - BN - ReLU` repeated, then 2x2 max pooling:

    vgg11_bn: [64], [128], [256, 256], [512, 512], [512, 512]
    vgg19_bn: [64, 64], [128, 128], [256] * 4, [512] * 4, [512] * 4
    (B, C, 32, 32) -> ... -> (B, 512, 1, 1) -> adaptive avg pool -> flatten
    classifier: linear(512, 512) - ReLU - dropout - linear(512, 512) - ReLU - dropout - linear(512, num_classes)

Channel counts scale with `width_mult` (for small test models). In an MoE topology each stage
in `moe_stages` (default the last) becomes an MoE layer of copies of that stage, routed per
image on the pooled stage input.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Sequence

import torch
from torch import Tensor, nn

from models.config import ModelConfigError
from models.moe import MoEModelMixin
from models.registry import register_arch
from models.resnet import check_stages
from models.topology import Topology

#: channels of the convs of each stage
VGG_STAGES: dict[str, tuple[tuple[int, ...], ...]] = {
    "vgg11_bn": ((64,), (128,), (256, 256), (512, 512), (512, 512)),
    "vgg19_bn": ((64, 64), (128, 128), (256,) * 4, (512,) * 4, (512,) * 4),
}


@dataclass(frozen=True)
class VGGOptions:
    width_mult: float = 1.0              # scales every channel count (1.0 = the paper's)
    in_chans: int = 3                    # input image channels
    dropout: float = 0.5                 # dropout in the classifier
    moe_stages: tuple[int, ...] = (4,)   # stages (0..4) whose copies are the experts

    def __post_init__(self) -> None:
        if not self.width_mult > 0 or self.in_chans < 1 or not 0 <= self.dropout < 1:
            raise ModelConfigError(f"need width_mult > 0, in_chans >= 1, 0 <= dropout < 1; got "
                                   f"{self.width_mult}, {self.in_chans}, {self.dropout}")
        check_stages(self.moe_stages, 5)


class VGGStage(nn.Sequential):
    """conv3x3-BN-ReLU per entry of `channels`, then 2x2 max pool;
    (B, cin, H, W) -> (B, channels[-1], H/2, W/2)."""

    def __init__(self, cin: int, channels: Sequence[int]) -> None:
        layers: list[nn.Module] = []
        for cout in channels:
            layers += [nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]
            cin = cout
        layers.append(nn.MaxPool2d(2, 2))
        super().__init__(*layers)
        self.out_channels = cin

    def out_shape(self, in_shape: torch.Size) -> tuple:
        b, _, h, w = in_shape
        return (b, self.out_channels, h // 2, w // 2)


class CifarVGG(MoEModelMixin, nn.Module):
    """VGG_bn for small images; see the module docstring.

    Args:
        num_classes: classifier outputs.
        topology: how the stages in `moe_stages` become MoE layers.
        stages: channels of each stage's convs (`VGG_STAGES[name]`).
        options: width multiplier, input channels, dropout, MoE stages.
    """

    def __init__(self, num_classes: int, topology: Topology,
                 stages: Sequence[Sequence[int]], options: VGGOptions) -> None:
        super().__init__()
        self.moe_stages = tuple(options.moe_stages)
        cin = options.in_chans
        layers = []
        for i, channels in enumerate(stages):
            widths = [max(1, round(c * options.width_mult)) for c in channels]
            build = partial(VGGStage, cin, widths)
            layers.append(topology.layer(build, cin) if i in self.moe_stages else build())
            cin = widths[-1]
        self.stages = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        hidden = max(1, round(512 * options.width_mult))
        self.classifier = nn.Sequential(
            nn.Linear(cin, hidden), nn.ReLU(inplace=True), nn.Dropout(options.dropout),
            nn.Linear(hidden, hidden), nn.ReLU(inplace=True), nn.Dropout(options.dropout),
            nn.Linear(hidden, num_classes))
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        for m in self.classifier.modules():
            if isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def forward_features(self, x: Tensor) -> Tensor:
        """(B, in_chans, H, W) -> (B, C, H/32, W/32)."""
        return self.stages(x)

    def forward(self, x: Tensor) -> Tensor:
        """(B, in_chans, H, W) -> logits (B, num_classes)."""
        return self.classifier(torch.flatten(self.pool(self.forward_features(x)), 1))

    def trunk_modules(self) -> list[nn.Module]:
        return list(self.stages[:min(self.moe_stages)])


@register_arch("vgg11_bn", VGGOptions, moe_option="moe_stages",
               description="CIFAR VGG11 with batch norm; experts = copies of a stage")
def vgg11_bn(num_classes: int, topology: Topology, options: VGGOptions) -> CifarVGG:
    return CifarVGG(num_classes, topology, VGG_STAGES["vgg11_bn"], options)


@register_arch("vgg19_bn", VGGOptions, moe_option="moe_stages",
               description="CIFAR VGG19 with batch norm; experts = copies of a stage")
def vgg19_bn(num_classes: int, topology: Topology, options: VGGOptions) -> CifarVGG:
    return CifarVGG(num_classes, topology, VGG_STAGES["vgg19_bn"], options)
