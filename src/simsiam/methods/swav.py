"""SwAV (Caron et al., NeurIPS 2020): swapped prediction of online cluster assignments.

Each view's projection z is l2-normalised and scored against K prototypes c_k (rows of a linear
layer, l2-normalised inside the graph -- SimSiam's appendix: "full gradient computation" instead of
SwAV's out-of-graph renormalisation): s = z C^T, ``(B, K)``. The targets ("codes") q come from
the Sinkhorn-Knopp transform of the scores, an equipartition of the batch over the prototypes,
computed without gradient (eps = 0.05, 3 iterations):

    Q = exp(S^T / eps);  repeat: rows sum to 1/K, then columns sum to 1/B;  q = B Q^T

Swapped prediction, p = softmax(s / t) with t = 0.1:

    L = -1/2 sum_k [ q2k log p1k + q1k log p2k ]        averaged over images

Section 6.2: ``methods.predictor`` scores h(z) instead of z on the predicting side (h: SimSiam's
prediction MLP; the prototypes stay the last, shared layer); ``methods.stop_grad=false`` lets the
gradient through the Sinkhorn targets (the paper: training diverges). Under DDP, Sinkhorn runs on
the global batch (scores gathered), as SwAV's sums over all processes do. Two views only: the
multi-crop of SwAV's paper is not implemented (SimSiam's comparison uses two 224 views too).
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from ..config import Config
from ..models import heads
from ..parallel import distributed as dist
from .base import Method
from .parts import no_autocast, with_predictor_group
from .queue import FeatureQueue


def sinkhorn(scores: torch.Tensor, eps: float, iters: int) -> torch.Tensor:
    """Codes ``(B, K)`` for scores ``(B, K)``: each row a distribution over prototypes, each
    prototype given about B/K of the batch. Differentiable; callers choose whether to detach."""
    with no_autocast(scores):  # exp(s / 0.05) needs float32
        scores = scores.float()
        # Subtracting the max leaves Q unchanged after the first normalisation; it only avoids overflow.
        q = torch.exp((scores - scores.max().detach()) / eps).T  # (K, B)
        k, b = q.shape
        q = q / q.sum()
        for _ in range(iters):
            q = q / q.sum(dim=1, keepdim=True) / k  # every prototype gets total mass 1/K
            q = q / q.sum(dim=0, keepdim=True) / b  # every image gets total mass 1/B
        return (q * b).T  # rows (images) sum to 1


def swapped_prediction(s1: torch.Tensor, s2: torch.Tensor, q1: torch.Tensor, q2: torch.Tensor,
                       temperature: float) -> torch.Tensor:
    """-1/2 [q2 . log softmax(s1 / t) + q1 . log softmax(s2 / t)], averaged over the batch."""
    with no_autocast(s1):
        def ce(codes, scores):
            return -(codes * F.log_softmax(scores.float() / temperature, dim=1)).sum(dim=1).mean()

        return 0.5 * (ce(q2, s1) + ce(q1, s2))


class SwAV(Method):
    num_views = 2

    def __init__(self, cfg: Config, backbone: nn.Module):
        super().__init__()
        m, s = cfg.model, cfg.methods
        self.cfg = cfg
        self.backbone = backbone
        self.projector = heads.projector_for(m, backbone.num_features)
        self.prototypes = nn.Linear(m.dim, s.swav_prototypes, bias=False)  # (K, d) weight
        # Section 6.2: SimSiam's predictor on the predicting side; SwAV itself has none.
        self.predictor = heads.predictor_for(m) if s.predictor else nn.Identity()
        # One queue of past embeddings per view, joined to Sinkhorn's batch once full.
        self.queues: Optional[nn.ModuleList] = nn.ModuleList(
            [FeatureQueue(s.swav_queue, m.dim) for _ in range(self.num_views)]) if s.swav_queue else None
        # Buffers, so that a resumed run knows where the prototype freeze ends.
        self.register_buffer("steps_done", torch.zeros((), dtype=torch.long))
        self.register_buffer("freeze_steps", torch.tensor(-1, dtype=torch.long))  # -1: not known yet

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """The projector output z, ``(B, d)`` (before the l2-normalisation and the prototypes)."""
        return self.projector(self.backbone(x))

    def training_step(self, views: tuple[torch.Tensor, ...]) -> dict[str, torch.Tensor]:
        z = [self.encode(v) for v in views[:2]]  # 2 x (n, d)
        c = F.normalize(self._prototype_weight(), dim=1)  # (K, d)
        targets = [F.normalize(zv, dim=1) @ c.T for zv in z]  # the scores Sinkhorn balances
        predictions = [F.normalize(self.predictor(zv), dim=1) @ c.T for zv in z]  # (n, K); = targets without h
        codes = [self._codes(targets[v], v, c) for v in range(2)]
        loss = swapped_prediction(predictions[0], predictions[1], codes[0], codes[1], self.cfg.methods.temperature)
        if self.queues is not None:
            for v in range(2):
                self.queues[v].enqueue(dist.all_gather_cat(F.normalize(z[v].detach(), dim=1)))
        return {"loss": loss, "z": z[0].detach()}

    def _codes(self, scores: torch.Tensor, view: int, prototypes: torch.Tensor) -> torch.Tensor:
        """Sinkhorn codes of this process's images, from the global batch (and the queue once full)."""
        s = self.cfg.methods
        n = scores.shape[0]
        with torch.set_grad_enabled(torch.is_grad_enabled() and not s.stop_grad), no_autocast(scores):
            if s.stop_grad:  # SwAV: the targets are constants
                everyone = dist.all_gather_cat(scores.detach())  # (world * n, K)
            else:  # section 6.2's ablation: gradient through the targets, across processes too
                everyone = dist.gather_with_grad(scores)
            if self.queues is not None and self.queues[view].is_full():
                everyone = torch.cat([everyone.float(), self.queues[view].active() @ prototypes.float().T])
            return sinkhorn(everyone, s.sinkhorn_eps, s.sinkhorn_iters)[dist.rank() * n: (dist.rank() + 1) * n]

    def _prototype_weight(self) -> torch.Tensor:
        w = self.prototypes.weight
        if self._prototypes_frozen():
            # No gradient reaches the prototypes, yet they stay in the graph: DDP expects every
            # parameter to get one (a zero). Weight decay then only shrinks them, which the
            # l2-normalisation undoes.
            return w.detach() + 0 * w
        return w

    def _prototypes_frozen(self) -> bool:
        if self.cfg.methods.swav_freeze_prototypes_epochs <= 0:
            return False
        freeze = int(self.freeze_steps)
        return freeze < 0 or int(self.steps_done) < freeze  # before the first step ends: frozen

    def on_step_end(self, step: int, total_steps: int) -> None:
        self.steps_done.fill_(step + 1)
        if int(self.freeze_steps) < 0:
            steps_per_epoch = total_steps / max(1, self.cfg.optim.epochs)
            self.freeze_steps.fill_(round(self.cfg.methods.swav_freeze_prototypes_epochs * steps_per_epoch))

    def param_groups(self) -> list[dict]:
        """The predictor (section 6.2) apart, tagged ``fix_lr`` as in SimSiam."""
        return with_predictor_group(self, self.predictor, self.cfg.optim.fix_pred_lr)
