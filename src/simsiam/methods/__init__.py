"""The method registry: a dict. A new method is one file plus one entry here.

A method is an ``nn.Module`` built as ``Method(cfg, backbone)`` with a ``backbone`` attribute,
``num_views``, ``encode(x)`` (projector output), ``training_step(views) -> {"loss", "z"}`` and
``param_groups()`` (dicts with a ``fix_lr`` tag read by the lr schedule).
"""
from __future__ import annotations

from torch import nn

from ..config import Config
from ..models import build_backbone
from .simsiam import SimSiam

METHODS: dict[str, type[nn.Module]] = {
    "simsiam": SimSiam,
}


def build_method(cfg: Config, in_channels: int) -> nn.Module:
    """Backbone from the registry plus the method's heads, as the config says."""
    m = cfg.model
    backbone = build_backbone(m.backbone, in_channels=m.in_channels or in_channels, width=m.width,
                              zero_init_residual=m.zero_init_residual)
    return METHODS[cfg.method](cfg, backbone)
