"""MoCo v2 (Chen, Fan, Girshick & He 2020) with the symmetrised loss of SimSiam's reproduction
(appendix C: "use symmetrized loss for MoCo v2 (vs. originally asymmetric)").

Query encoder f_q = backbone + projector (trained). Key encoder f_k: its momentum copy, no gradient,

    theta_k <- m theta_k + (1 - m) theta_q          after every optimiser step (m = 0.999)

InfoNCE against a queue of K past keys (the negatives), q and k l2-normalised, t = 0.2:

    L(q, k+) = -log  exp(q.k+ / t) / ( exp(q.k+ / t) + sum_{k- in queue} exp(q.k- / t) )
    L = 1/2 [ L(q1, k2) + L(q2, k1) ]

then the batch's keys (every process's, under DDP) replace the oldest ones in the queue. Under DDP
the BNs are synchronised (train.py), which is what shuffling BN was for in MoCo v1/v2; shuffled BN
itself is not implemented, so in one process the key and query BN statistics come from the same batch.
"""
from __future__ import annotations

import sys

import torch
import torch.nn.functional as F
from torch import nn

from ..config import Config
from ..models import heads
from ..parallel import distributed as dist
from .base import Method
from .momentum import ema_update, frozen_copy
from .parts import no_autocast
from .queue import FeatureQueue


def moco_infonce(q: torch.Tensor, k: torch.Tensor, negatives: torch.Tensor, temperature: float) -> torch.Tensor:
    """InfoNCE of queries ``q`` ``(n, d)`` with positive keys ``k`` ``(n, d)`` and the shared negatives
    ``(K, d)``: cross-entropy with the positive as class 0 of ``[q.k+, q.k-_1 .. q.k-_K] / t``."""
    with no_autocast(q):  # logits / t in float32
        q = F.normalize(q.float(), dim=1)
        k = F.normalize(k.float(), dim=1)
        l_pos = (q * k).sum(dim=1, keepdim=True)  # (n, 1)
        l_neg = q @ negatives.float().T  # (n, K)
        logits = torch.cat([l_pos, l_neg], dim=1) / temperature
        return F.cross_entropy(logits, torch.zeros(q.shape[0], dtype=torch.long, device=q.device))


class MoCo(Method):
    num_views = 2

    def __init__(self, cfg: Config, backbone: nn.Module):
        super().__init__()
        m = cfg.model
        self.cfg = cfg
        self.backbone = backbone
        self.projector = heads.projector_for(m, backbone.num_features)
        self.momentum_backbone = frozen_copy(self.backbone)
        self.momentum_projector = frozen_copy(self.projector)
        self.queue = FeatureQueue(cfg.methods.moco_queue, m.dim)  # (K, d) unit vectors, a buffer
        self._queue_checked = False

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """f_q(x): the query encoder's projector output, ``(B, d)``."""
        return self.projector(self.backbone(x))

    @torch.no_grad()
    def encode_keys(self, x: torch.Tensor) -> torch.Tensor:
        """f_k(x), l2-normalised: the momentum encoder never gets a gradient."""
        return F.normalize(self.momentum_projector(self.momentum_backbone(x)), dim=1)

    def training_step(self, views: tuple[torch.Tensor, ...]) -> dict[str, torch.Tensor]:
        q1, q2 = self.encode(views[0]), self.encode(views[1])  # (n, d) each
        k1, k2 = self.encode_keys(views[0]), self.encode_keys(views[1])
        # A copy: the enqueue below overwrites the queue in place, and backward still needs these values.
        negatives = self.queue.active().clone()
        t = self.cfg.methods.temperature
        loss = 0.5 * (moco_infonce(q1, k2, negatives, t) + moco_infonce(q2, k1, negatives, t))
        self.queue.enqueue(dist.all_gather_cat(torch.cat([k1, k2])))  # every process keeps the same queue
        return {"loss": loss, "z": q1.detach()}

    def on_step_end(self, step: int, total_steps: int) -> None:
        ema_update(self.momentum_backbone, self.backbone, self.cfg.methods.momentum)
        ema_update(self.momentum_projector, self.projector, self.cfg.methods.momentum)
        if not self._queue_checked:  # once per process: the data size is known from the first step on
            self._clip_queue_to_data(total_steps)
            self._queue_checked = True

    def _clip_queue_to_data(self, total_steps: int) -> None:
        """A queue longer than the training set holds several stale keys of the very images being
        contrasted (each image's own old keys among its negatives). Keep it under the data size."""
        images = total_steps // max(1, self.cfg.optim.epochs) * self.cfg.optim.batch_size  # per epoch
        length = int(self.queue.length)
        if length <= images:
            return
        # Two keys per image enter per step: a quarter of an epoch's images' worth of keys at most,
        # yet at least one step's keys.
        clipped = min(length, max(images // 4, 2 * self.cfg.optim.batch_size))
        self.queue.clip(clipped)
        if dist.is_main():
            print(f"WARNING: methods.moco_queue={length} is longer than the {images} training images of an "
                  f"epoch, so each image would meet its own stale keys as negatives; using a queue of "
                  f"{clipped} keys instead (set methods.moco_queue to choose)", file=sys.stderr, flush=True)

    def param_groups(self) -> list[dict]:
        """One group: the query encoder. The key encoder and the queue are not optimised."""
        return [{"params": [p for p in self.parameters() if p.requires_grad], "fix_lr": False, "name": "encoder"}]
