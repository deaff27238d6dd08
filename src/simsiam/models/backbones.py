"""Backbones: ResNets with an ImageNet or a CIFAR stem, any input channels and a width option.

The module and parameter names are torchvision's (``conv1``, ``bn1``, ``layer1.0.conv1`` ...), so a
standard-width ImageNet-stem backbone saves a state dict that ``torchvision.models.resnet50()``
loads as it is (only ``fc`` missing). Every backbone returns pooled features ``(B, num_features)``; ``timm:<name>`` builds any timm model
(``models/timm_backbones.py``).
"""
from __future__ import annotations

from typing import Callable, Type, Union

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.resnet import BasicBlock, Bottleneck

from .timm_backbones import build_timm_backbone, is_timm

Block = Type[Union[BasicBlock, Bottleneck]]


class SubsampledPointwiseConv(nn.Conv2d):
    """A residual shortcut's strided 1x1 convolution, computed as subsample-then-convolve.

    The arithmetic is the same (a 1x1 kernel reads only the pixels its stride lands on; the output
    size is equal for every input size, odd ones included), and the parameters are nn.Conv2d's, so
    state dicts stay torchvision's. Why not nn.Conv2d itself: on AVX2 CPUs oneDNN's strided 1x1
    kernel corrupts the heap in backward for channels_last inputs with fewer than 8 channels
    (seen with torch 2.14.1 on one thread: a CIFAR ResNet of width 4 aborts in its first steps).
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        sh, sw = self.stride
        if (sh, sw) != (1, 1):
            x = x[:, :, ::sh, ::sw]
        return F.conv2d(x, self.weight, self.bias)


class ResNet(nn.Module):
    """A torchvision-compatible ResNet trunk without the classifier.

    ``stem="imagenet"``: 7x7 stride-2 conv + 3x3 max-pool (for 224-pixel images).
    ``stem="cifar"``: 3x3 stride-1 conv, no max-pool (appendix D; for 32-pixel images).
    ``stem="small"``: the CIFAR stem then a 2x2 max-pool: every stage at half the side, a quarter
    of the CIFAR trunk's FLOPs, for 28-64 pixel images on a CPU (the ``fmnist`` preset).
    ``width`` is the channel count of the first stage (64 standard); later stages double it.
    ``pool_grid``: the last stage is average-pooled to a ``pool_grid`` x ``pool_grid`` grid and
    flattened (1: global average pooling, the standard ResNet); 2 keeps where in the image a feature
    was, at ``pool_grid ** 2`` times the feature width, for any input size.
    ``feature_stages``: how many of the last stages give features (1: the last only, the standard
    ResNet). Each earlier stage is pooled to twice the grid side of the stage after it (the cells
    cover the same regions) and all are flattened and concatenated, last stage first. Earlier
    stages keep finer detail of where things are, which a small image's classes can turn on.
    """

    def __init__(self, block: Block, layers: list[int], in_channels: int = 3, width: int = 64,
                 stem: str = "imagenet", zero_init_residual: bool = True, pool_grid: int = 1,
                 feature_stages: int = 1):
        super().__init__()
        if stem not in ("imagenet", "cifar", "small"):
            raise ValueError(f"stem must be 'imagenet', 'cifar' or 'small', got {stem!r}")
        if pool_grid < 1:
            raise ValueError(f"model.pool_grid must be at least 1 (1: global average pooling), got {pool_grid}")
        if not 1 <= feature_stages <= 4:
            raise ValueError(f"model.feature_stages must be 1 to 4 (how many of the last stages give features; 1: "
                             f"the last only), got {feature_stages}")
        self.stem = stem
        self.inplanes = width
        if stem == "imagenet":
            self.conv1 = nn.Conv2d(in_channels, width, kernel_size=7, stride=2, padding=3, bias=False)
            self.maxpool: nn.Module = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        else:
            self.conv1 = nn.Conv2d(in_channels, width, kernel_size=3, stride=1, padding=1, bias=False)
            self.maxpool = nn.MaxPool2d(kernel_size=2, stride=2) if stem == "small" else nn.Identity()
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = self._make_layer(block, width, layers[0], stride=1)
        self.layer2 = self._make_layer(block, width * 2, layers[1], stride=2)
        self.layer3 = self._make_layer(block, width * 4, layers[2], stride=2)
        self.layer4 = self._make_layer(block, width * 8, layers[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((pool_grid, pool_grid))
        # (stage, grid side) of every stage that gives features, the last first.
        self.feature_grids = [(4 - j, pool_grid * 2 ** j) for j in range(feature_stages)]
        self.num_features = sum(width * 2 ** (stage - 1) * block.expansion * side * side
                                for stage, side in self.feature_grids)

        # torchvision's initialisation, so that a standard backbone starts where torchvision's does.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if zero_init_residual:
            # Paper (section 2): the last BN gamma of every residual block starts at 0, so each block
            # begins as the identity.
            for m in self.modules():
                if isinstance(m, Bottleneck):
                    nn.init.zeros_(m.bn3.weight)
                elif isinstance(m, BasicBlock):
                    nn.init.zeros_(m.bn2.weight)

    def _make_layer(self, block: Block, planes: int, blocks: int, stride: int) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                SubsampledPointwiseConv(self.inplanes, planes * block.expansion, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(planes * block.expansion),
            )
        layers = [block(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * block.expansion
        layers += [block(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def stage_maps(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The four stages' feature maps, first to last."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        maps = []
        for layer in (self.layer1, self.layer2, self.layer3, self.layer4):
            x = layer(x)
            maps.append(x)
        return maps

    def forward_maps(self, x: torch.Tensor) -> torch.Tensor:
        """The last stage's feature maps ``(B, channels, h, w)``."""
        return self.stage_maps(x)[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        maps = self.stage_maps(x)
        if len(self.feature_grids) == 1:
            return torch.flatten(self.avgpool(maps[-1]), 1)  # (B, num_features)
        return torch.cat([torch.flatten(F.adaptive_avg_pool2d(maps[stage - 1], side), 1)
                          for stage, side in self.feature_grids], 1)


def _factory(block: Block, layers: list[int], stem: str) -> Callable[..., ResNet]:
    def build(in_channels: int = 3, width: int = 64, zero_init_residual: bool = True, pool_grid: int = 1,
              feature_stages: int = 1) -> ResNet:
        return ResNet(block, layers, in_channels, width, stem, zero_init_residual, pool_grid, feature_stages)
    return build


# A registry is a dict: a new backbone is one entry here.
BACKBONES: dict[str, Callable[..., ResNet]] = {
    "resnet18": _factory(BasicBlock, [2, 2, 2, 2], "imagenet"),
    "resnet34": _factory(BasicBlock, [3, 4, 6, 3], "imagenet"),
    "resnet50": _factory(Bottleneck, [3, 4, 6, 3], "imagenet"),
    "resnet18_cifar": _factory(BasicBlock, [2, 2, 2, 2], "cifar"),
    "resnet34_cifar": _factory(BasicBlock, [3, 4, 6, 3], "cifar"),
    "resnet18_small": _factory(BasicBlock, [2, 2, 2, 2], "small"),
}

# ``model.backbone`` of a run given its backbone as a module through the Python API: the prefix
# plus the module's class name (the module itself cannot be rebuilt from a name).
CUSTOM_PREFIX = "custom:"

# The torchvision constructor whose state dict a standard-width, 3-channel backbone matches.
TORCHVISION_EQUIVALENT = {"resnet18": "resnet18", "resnet34": "resnet34", "resnet50": "resnet50"}


def build_backbone(name: str, in_channels: int = 3, width: int = 64, zero_init_residual: bool = True,
                   image_size: int = 0, pool_grid: int = 1, feature_stages: int = 1) -> nn.Module:
    """A registry ResNet, or any timm model for a ``timm:<name>`` (``width`` and ``zero_init_residual``
    are the ResNets' options; a timm model's size is its name, ``image_size`` is for ViTs)."""
    if is_timm(name):
        for key, value in (("pool_grid", pool_grid), ("feature_stages", feature_stages)):
            if value != 1:
                raise ValueError(f"model.{key}={value} is an option of this package's ResNets; a timm model "
                                 f"pools as it was built (leave model.{key}=1)")
        return build_timm_backbone(name, in_channels, image_size)
    if name.startswith(CUSTOM_PREFIX):
        raise ValueError(f"this run trained your own backbone ({name}); build it again and pass it, e.g. "
                         f"load_pretrained(path, backbone={name[len(CUSTOM_PREFIX):]}(...))")
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; choose one of: {', '.join(sorted(BACKBONES))}, "
                         "or timm:<any timm model>")
    return BACKBONES[name](in_channels=in_channels, width=width, zero_init_residual=zero_init_residual,
                           pool_grid=pool_grid, feature_stages=feature_stages)


def input_channels(backbone: nn.Module) -> int:
    """The channel count a backbone takes: that of its first convolution (a ResNet's conv1, a ViT's
    patch embedding), 3 when it has none."""
    first = next((m for m in backbone.modules() if isinstance(m, nn.Conv2d)), None)
    return first.in_channels if first is not None else 3
