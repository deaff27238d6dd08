"""BYOL (Grill et al., NeurIPS 2020): an online network predicts a momentum target network.

Online: backbone + projector + predictor q. Target: a momentum copy of backbone + projector, no
gradient, updated after every step with a momentum rising from tau_base (0.99) to 1:

    xi <- tau xi + (1 - tau) theta,   tau = 1 - (1 - tau_base) (cos(pi k / K) + 1) / 2

Loss, with p = q(z) the online prediction and z' the target projection of the other view:

    l(p, z') = || p/||p|| - z'/||z'|| ||^2 = 2 - 2 <p, z'> / (||p|| ||z'||)
    L = l(p1, z2') + l(p2, z1')            (symmetrised: BYOL sums both directions)

Section 6.2 / BYOL's Table 5: ``methods.momentum=0`` removes the momentum encoder -- the target is
the online network's own projection, behind a stop-gradient (``methods.stop_grad``, read where the
loss is formed). That is SimSiam with BYOL's loss and heads; BYOL's paper reports a collapse (0.3%).
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from ..config import Config
from ..models import heads
from .base import Method
from .losses import target
from .momentum import cosine_momentum, ema_update, frozen_copy
from .parts import with_predictor_group


def normalized_mse(p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """2 - 2 cos(p, z), averaged over the batch: the squared distance of the l2-normalised vectors."""
    return (2 - 2 * (F.normalize(p, dim=1) * F.normalize(z, dim=1)).sum(dim=1)).mean()


class BYOL(Method):
    num_views = 2

    def __init__(self, cfg: Config, backbone: nn.Module):
        super().__init__()
        m = cfg.model
        self.cfg = cfg
        self.backbone = backbone
        self.projector = heads.projector_for(m, backbone.num_features)
        self.predictor = heads.predictor_for(m)
        self.base_momentum = cfg.methods.momentum
        # momentum 0: no target network at all (not a schedule from 0): the online network is the target.
        self.momentum_backbone: Optional[nn.Module] = frozen_copy(backbone) if self.base_momentum else None
        self.momentum_projector: Optional[nn.Module] = frozen_copy(self.projector) if self.base_momentum else None

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """The online projection z, ``(B, d)``."""
        return self.projector(self.backbone(x))

    @torch.no_grad()
    def encode_target(self, x: torch.Tensor) -> torch.Tensor:
        """The target network's projection z' (no gradient)."""
        return self.momentum_projector(self.momentum_backbone(x))

    def training_step(self, views: tuple[torch.Tensor, ...]) -> dict[str, torch.Tensor]:
        z1, z2 = self.encode(views[0]), self.encode(views[1])  # (n, d) each
        p1, p2 = self.predictor(z1), self.predictor(z2)
        if self.momentum_backbone is not None:
            t1, t2 = self.encode_target(views[0]), self.encode_target(views[1])
        else:  # no momentum encoder: the online projections, stop-gradient as configured
            t1, t2 = target(z1, self.cfg.methods.stop_grad), target(z2, self.cfg.methods.stop_grad)
        loss = normalized_mse(p1, t2) + normalized_mse(p2, t1)
        return {"loss": loss, "z": z1.detach()}

    def on_step_end(self, step: int, total_steps: int) -> None:
        if self.momentum_backbone is None:
            return
        tau = cosine_momentum(step, total_steps, self.base_momentum)
        ema_update(self.momentum_backbone, self.backbone, tau)
        ema_update(self.momentum_projector, self.projector, tau)

    def param_groups(self) -> list[dict]:
        """The predictor apart, ``fix_lr`` as ``optim.fix_pred_lr`` says (BYOL's own recipe: off)."""
        return with_predictor_group(self, self.predictor, self.cfg.optim.fix_pred_lr)
