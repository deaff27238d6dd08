"""SimCLR (Chen et al., ICML 2020) in SimSiam's framework, with the cross-ablations of section 6.2.

NT-Xent (InfoNCE) over the 2N views of a batch, sim the cosine similarity, t the temperature:

    l(i, j) = -log  exp(sim(z_i, z_j) / t) / sum_{k != i} exp(sim(z_i, z_k) / t)
    L = 1/(2N) sum_k [ l(2k-1, 2k) + l(2k, 2k-1) ]

Every other view of the batch is a negative; under DDP the batch is the global one, gathered
*with* gradient, so two processes compute the loss of one process with the whole batch.

Section 6.2 ("SimCLR + predictor", "+ predictor + stop-grad"; footnote 7): the prediction MLP h is
appended to one branch and the stop-gradient to the other, symmetrised by swapping. Here the
queries are h(z) of both views and the keys z of both views (stopgrad(z) with ``stop_grad``).
Switches: ``methods.predictor`` (read in ``__init__``), ``methods.stop_grad`` (read in
``training_step``, where the loss is formed).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..config import Config
from ..models import heads
from ..parallel import distributed as dist
from .base import Method
from .losses import target
from .parts import no_autocast, with_predictor_group


def nt_xent(queries: torch.Tensor, keys: torch.Tensor, temperature: float, offset: int = 0) -> torch.Tensor:
    """NT-Xent of this process's 2n queries against all keys, averaged over the queries.

    ``queries`` ``(2n, d)``: this process's views, ``[view 1; view 2]``. ``keys`` ``(M, d)`` with
    this process's ``[view 1; view 2]`` at rows ``offset .. offset + 2n`` (the global batch under
    DDP). Query i's positive is key ``offset + (i + n) mod 2n`` (the other view of its image); key
    ``offset + i`` (its own view) is left out of the denominator; every other key is a negative.
    """
    two_n = queries.shape[0]
    with no_autocast(queries):  # logits / t in float32: bf16 would round similarities 1/t = 10 times coarser
        q = F.normalize(queries.float(), dim=1)
        k = F.normalize(keys.float(), dim=1)
        logits = q @ k.T / temperature  # (2n, M) cosine similarities / t
        rows = torch.arange(two_n, device=q.device)
        logits[rows, offset + rows] = float("-inf")  # k != i: a view is not its own negative
        positives = offset + (rows + two_n // 2) % two_n
        return F.cross_entropy(logits, positives)


class SimCLR(Method):
    num_views = 2

    def __init__(self, cfg: Config, backbone: nn.Module):
        super().__init__()
        m = cfg.model
        self.cfg = cfg
        self.backbone = backbone
        # The paper's improved reproduction: the 3-layer projector (appendix C), from model.proj_layers.
        self.projector = heads.projector_for(m, backbone.num_features)
        # Section 6.2: SimSiam's prediction MLP on the query branch; SimCLR itself has none.
        self.predictor = heads.predictor_for(m) if cfg.methods.predictor else nn.Identity()

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """f(x): the projector output z, ``(B, d)``."""
        return self.projector(self.backbone(x))

    def training_step(self, views: tuple[torch.Tensor, ...]) -> dict[str, torch.Tensor]:
        z1, z2 = self.encode(views[0]), self.encode(views[1])  # (n, d) each
        queries = torch.cat([self.predictor(z1), self.predictor(z2)])  # (2n, d)
        keys = target(torch.cat([z1, z2]), self.cfg.methods.stop_grad)  # (2n, d); constants with stop-grad
        all_keys = dist.gather_with_grad(keys)  # (world * 2n, d): negatives from every process
        loss = nt_xent(queries, all_keys, self.cfg.methods.temperature, offset=dist.rank() * keys.shape[0])
        return {"loss": loss, "z": z1.detach()}

    def param_groups(self) -> list[dict]:
        """One group; with the section-6.2 predictor, its own group tagged ``fix_lr`` as in SimSiam."""
        return with_predictor_group(self, self.predictor, self.cfg.optim.fix_pred_lr)
