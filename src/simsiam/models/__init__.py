"""Backbones (a registry, plus any timm model as ``timm:<name>``) and the MLP head builder."""
from .backbones import (
    BACKBONES,
    CUSTOM_PREFIX,
    TORCHVISION_EQUIVALENT,
    ResNet,
    build_backbone,
    input_channels,
)
from .heads import HEAD_BN, mlp, predictor, projector

__all__ = ["BACKBONES", "CUSTOM_PREFIX", "TORCHVISION_EQUIVALENT", "ResNet", "build_backbone", "input_channels", "HEAD_BN", "mlp", "predictor", "projector"]
