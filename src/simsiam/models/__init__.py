"""Backbones (a registry) and the MLP head builder."""
from .backbones import BACKBONES, TORCHVISION_EQUIVALENT, ResNet, build_backbone
from .heads import HEAD_BN, mlp, predictor, projector

__all__ = ["BACKBONES", "TORCHVISION_EQUIVALENT", "ResNet", "build_backbone", "HEAD_BN", "mlp", "predictor", "projector"]
