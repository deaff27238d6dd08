"""Section 5's k-step alternation: eta is computed once, then held fixed for k SGD steps.

The paper reads SimSiam as alternating optimisation of L(theta, eta) = E ||F_theta(T(x)) - eta_x||^2:
the eta step sets eta_x = F_theta(T'(x)), the theta step does SGD against that eta (hence the
stop-gradient). SimSiam alternates after every SGD step. Here each alternation "pre-computes the
eta_x required for all k SGD steps and caches them in memory, then performs k SGD steps" (paper).

How the images of the next k steps are known in advance: the training loop passes the epoch's
batches through :meth:`KStepSimSiam.stream`, which takes the next k batches -- their two views
already drawn -- computes z = F_theta(view) of every view with no gradient and theta as it is at
the start of the block, then hands the k batches to the loop one at a time. The step pairs each
view's prediction with the cached z of the *other* view of the same image, as SimSiam's symmetric
loss does, so k=1 is SimSiam step for step (the paper's k=1 row) and T' is the partner view.

Blocks do not cross an epoch boundary (the last block of an epoch may be shorter) and a run
stops or checkpoints mid-epoch only between blocks (:meth:`KStepSimSiam.resumable_at`), so a
resumed run replays the same blocks and the cache needs no checkpointing: it holds targets
computed with theta as it was at the block's start, which a checkpoint taken inside the block
no longer has.
k = -1 makes the block the whole epoch (the paper's "one epoch" row); it holds one epoch of
views and their z in memory (about 0.6 GB for Fashion-MNIST), which is fine for in-memory
datasets and not meant for ImageNet.
"""
from __future__ import annotations

import itertools
from collections import deque
from typing import Iterable, Iterator

import torch

from ..config import Config, ConfigError
from ..parallel import distributed as dist
from .losses import symmetric_loss
from .simsiam import SimSiam


class KStepSimSiam(SimSiam):
    def __init__(self, cfg: Config, backbone: torch.nn.Module):
        super().__init__(cfg, backbone)
        if dist.is_enabled():
            raise ValueError("method=simsiam_kstep runs in one process (its cache is not shared across ranks)")
        if cfg.loss.symmetry != "symmetric" or not cfg.loss.stop_grad:
            raise ConfigError("method=simsiam_kstep is defined on the symmetric loss with cached (constant) "
                              "targets: keep loss.symmetry=symmetric and loss.stop_grad=true")
        self.block_steps = cfg.hypothesis.kstep  # -1: the whole epoch
        self.refreshes = 0  # blocks cached so far (what the tests count)
        self._cache: deque = deque()  # (views, (eta of view 1, eta of view 2)) for the block's remaining steps

    @property
    def num_views(self) -> int:
        return 2  # the alternation is defined on the symmetric two-view loss

    @torch.no_grad()
    def _refresh(self, block: list[dict]) -> None:
        """The eta step: z of every view of the block with the current theta (train mode, as SimSiam's targets)."""
        self._cache.clear()
        for batch in block:
            views = batch["views"]
            if views is not None:
                self._cache.append((views, (self.encode(views[0]), self.encode(views[1]))))
        self.refreshes += 1

    def resumable_at(self, batches_done: int) -> bool:
        return batches_done == 0 if self.block_steps < 0 else batches_done % self.block_steps == 0

    def stream(self, batches: Iterable[dict]) -> Iterator[dict]:
        it = iter(batches)
        while True:
            block = list(itertools.islice(it, self.block_steps)) if self.block_steps > 0 else list(it)
            if not block:
                return
            self._refresh(block)
            yield from block

    def training_step(self, views: tuple[torch.Tensor, ...]) -> dict[str, torch.Tensor]:
        """The theta step: 1/2 D(p1, eta_2) + 1/2 D(p2, eta_1) against the block's cached eta."""
        if not self._cache or self._cache[0][0][0] is not views[0]:
            raise RuntimeError("simsiam_kstep: training_step got a batch that did not come through stream()")
        _, (eta1, eta2) = self._cache.popleft()
        z1, p1 = self(views[0])
        _, p2 = self(views[1])
        loss = symmetric_loss(p1, p2, eta1, eta2, similarity=self.cfg.loss.similarity)  # eta: constants already
        return {"loss": loss, "z": z1.detach()}
