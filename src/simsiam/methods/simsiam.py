"""SimSiam (Chen & He, CVPR 2021): encoder f = backbone + projector, predictor h, stop-gradient.

``training_step`` reads as the paper's Algorithm 1. Ablation switches from the config are each
read once: ``model.predictor`` and ``model.head_bn`` here when the heads are built,
``loss.stop_grad``/``loss.similarity``/``loss.symmetry`` in ``training_step``.
"""
from __future__ import annotations

import torch
from torch import nn

from ..config import Config
from ..models import heads
from .base import Method
from .losses import asymmetric_loss, symmetric_loss
from .parts import with_predictor_group


class SimSiam(Method):
    def __init__(self, cfg: Config, backbone: nn.Module):
        super().__init__()
        m = cfg.model
        self.cfg = cfg
        self.backbone = backbone
        self.projector = heads.projector_for(m, backbone.num_features)
        if m.predictor == "none":  # Table 1a: h is the identity
            self.predictor: nn.Module = nn.Identity()
        else:
            self.predictor = heads.predictor_for(m)
            if m.predictor == "frozen":  # Table 1b: h stays at its random initialisation
                self.predictor.requires_grad_(False)

    @property
    def num_views(self) -> int:
        """Augmented views per image the data pipeline must provide."""
        return 4 if self.cfg.loss.symmetry == "asymmetric2x" else 2

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """f(x): the projector output z, ``(B, d)``."""
        return self.projector(self.backbone(x))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = self.encode(x)
        return z, self.predictor(z)  # (B, d), (B, d)

    def training_step(self, views: tuple[torch.Tensor, ...]) -> dict[str, torch.Tensor]:
        """Returns the loss to minimise and ``z`` (one view's projections, detached) for the monitors."""
        loss_cfg = self.cfg.loss
        z1, p1 = self(views[0])
        z2, p2 = self(views[1])
        if loss_cfg.symmetry == "symmetric":
            loss = symmetric_loss(p1, p2, z1, z2, stop_grad=loss_cfg.stop_grad, similarity=loss_cfg.similarity)
        elif loss_cfg.symmetry == "asymmetric":
            loss = asymmetric_loss(p1, z2, stop_grad=loss_cfg.stop_grad, similarity=loss_cfg.similarity)
        else:  # "asymmetric2x": a second, independent pair of views of every image
            z3, p3 = self(views[2])
            z4, _ = self(views[3])
            loss = 0.5 * (asymmetric_loss(p1, z2, stop_grad=loss_cfg.stop_grad, similarity=loss_cfg.similarity)
                          + asymmetric_loss(p3, z4, stop_grad=loss_cfg.stop_grad, similarity=loss_cfg.similarity))
        return {"loss": loss, "z": z1.detach()}

    def param_groups(self) -> list[dict]:
        """Optimiser groups. The predictor's group is tagged ``fix_lr`` (Table 1c: constant lr)."""
        return with_predictor_group(self, self.predictor, self.cfg.optim.fix_pred_lr)
