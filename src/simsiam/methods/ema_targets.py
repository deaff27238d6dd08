"""Section 5's moving-average eta: a per-image memory bank of targets, which works without a predictor.

The paper removes the predictor and keeps eta_x as a moving average over the image's visits,
eta_x <- m eta_x + (1 - m) F_theta(T'(x)) with m = 0.8, the loss being D(F_theta(T(x)), eta_x):
55.0% linear accuracy, against 0.1% (collapse) without the moving average.

One step, for the images i of the batch and their two views (z = F_theta(view), sg = no gradient)::

    t1 = m eta_i + (1 - m) sg(z1)           # eta updated with T' = view 1
    t2 = m eta_i + (1 - m) sg(z2)           # eta updated with T' = view 2
    L  = 1/2 D(p1, t2) + 1/2 D(p2, t1)      # p = z with model.predictor=none (the paper's row)
    eta_i <- (t1 + t2) / 2                   # = m eta_i + (1 - m) mean(sg(z1), sg(z2))

so m = 0 is SimSiam exactly (with predictor none: Table 1a, which collapses). An image's first
visit sets eta_i to its z, since an average started from zero would lean towards 0 on the first
visits. The bank is a buffer (saved in checkpoints) that grows to the largest image index seen;
the image indices come from the loader through :meth:`MovingAverageSimSiam.stream`.
"""
from __future__ import annotations

from typing import Iterable, Iterator

import torch

from ..config import Config, ConfigError
from ..parallel import distributed as dist
from .losses import symmetric_loss
from .simsiam import SimSiam


def moving_average(old: torch.Tensor, new: torch.Tensor, m: float, seen: torch.Tensor) -> torch.Tensor:
    """``m old + (1 - m) new`` where the image was seen before, ``new`` on its first visit. ``(B, d)``."""
    return torch.where(seen[:, None], m * old + (1 - m) * new, new)


class MovingAverageSimSiam(SimSiam):
    def __init__(self, cfg: Config, backbone: torch.nn.Module):
        super().__init__(cfg, backbone)
        if dist.is_enabled():
            raise ValueError("method=simsiam_ema runs in one process (its bank is not shared across ranks)")
        if cfg.loss.symmetry != "symmetric" or not cfg.loss.stop_grad:
            raise ConfigError("method=simsiam_ema is defined on the symmetric loss with constant targets: keep "
                              "loss.symmetry=symmetric and loss.stop_grad=true")
        self.m = cfg.hypothesis.ema_m
        self.register_buffer("eta", torch.zeros(0, cfg.model.dim))  # (N, d): one target per image
        self.register_buffer("seen", torch.zeros(0, dtype=torch.bool))  # (N,)
        self.register_load_state_dict_pre_hook(self._fit_bank_to_checkpoint)
        self._batch: tuple = (None, None)  # (first view, image indices) of the batch the loop is on

    @property
    def num_views(self) -> int:
        return 2

    def stream(self, batches: Iterable[dict]) -> Iterator[dict]:
        for batch in batches:
            self._batch = (batch["views"][0] if batch["views"] is not None else None, batch["index"])
            yield batch

    def _grow(self, size: int) -> None:
        if size > len(self.eta):
            eta = self.eta.new_zeros(size, self.eta.shape[1])
            seen = self.seen.new_zeros(size)
            eta[:len(self.eta)], seen[:len(self.seen)] = self.eta, self.seen
            self.eta, self.seen = eta, seen

    def _fit_bank_to_checkpoint(self, module, state_dict, prefix, *args) -> None:
        if prefix + "eta" in state_dict:
            self._grow(len(state_dict[prefix + "eta"]))

    def training_step(self, views: tuple[torch.Tensor, ...]) -> dict[str, torch.Tensor]:
        first, index = self._batch
        if first is not views[0]:
            raise RuntimeError("simsiam_ema: training_step got a batch that did not come through stream()")
        index = index.to(self.eta.device)
        self._grow(int(index.max()) + 1)
        z1, p1 = self(views[0])
        z2, p2 = self(views[1])
        old, seen = self.eta[index], self.seen[index]
        t1 = moving_average(old, z1.detach().float(), self.m, seen)
        t2 = moving_average(old, z2.detach().float(), self.m, seen)
        loss = symmetric_loss(p1, p2, t1, t2, similarity=self.cfg.loss.similarity)  # t1, t2: constants
        self.eta[index] = (t1 + t2) / 2
        self.seen[index] = True
        return {"loss": loss, "z": z1.detach()}
