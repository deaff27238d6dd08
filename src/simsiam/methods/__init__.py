"""The method registry: a dict. A new method is one file plus one entry here.

Every method implements the contract of :class:`methods.base.Method` (``training_step``,
``param_groups``, ``encode``, ``num_views``, and the optional ``stream`` / ``on_step_end`` hooks),
and is built as ``Method(cfg, backbone)`` by :func:`build_method`.
"""
from __future__ import annotations

from typing import Optional

from torch import nn

from ..config import Config
from ..models import build_backbone
from .base import Method
from .byol import BYOL
from .ema_targets import MovingAverageSimSiam
from .kstep import KStepSimSiam
from .moco import MoCo
from .simclr import SimCLR
from .simsiam import SimSiam
from .swav import SwAV

METHODS: dict[str, type[Method]] = {
    "simsiam": SimSiam,
    "simsiam_kstep": KStepSimSiam,  # section 5: eta cached for k steps (hypothesis.kstep)
    "simsiam_ema": MovingAverageSimSiam,  # section 5: per-image moving-average eta (hypothesis.ema_m)
    "simclr": SimCLR,  # section 6: negatives from the (global) batch; methods.temperature
    "moco": MoCo,  # section 6: MoCo v2, momentum encoder + queue of negatives, symmetrised loss
    "byol": BYOL,  # section 6: momentum target network; methods.momentum=0 removes it
    "swav": SwAV,  # section 6: Sinkhorn-Knopp online clustering, swapped prediction
}


def build_method(cfg: Config, in_channels: int, backbone: Optional[nn.Module] = None) -> Method:
    """Backbone from the registry (or ``backbone``, a module of your own) plus the method's heads,
    as the config says. Your own backbone needs ``num_features`` and a forward that returns pooled
    features ``(B, num_features)``."""
    m = cfg.model
    if backbone is None:
        backbone = build_backbone(m.backbone, in_channels=m.in_channels or in_channels, width=m.width,
                                  zero_init_residual=m.zero_init_residual, image_size=cfg.data.image_size,
                                  pool_grid=m.pool_grid, feature_stages=m.feature_stages)
    elif not isinstance(getattr(backbone, "num_features", None), int):
        raise ValueError(f"your backbone {type(backbone).__name__} needs an integer attribute num_features: the "
                         "width of the pooled features (B, num_features) its forward returns")
    return METHODS[cfg.method](cfg, backbone)
