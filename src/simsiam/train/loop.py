"""One epoch of training: the loader's batches, through the method's ``stream`` hook, each one step.

``pretrain`` runs every epoch with :func:`run_epoch`; ``simsiam bench`` draws the same batches
from :func:`epoch_batches` into the same :class:`~simsiam.train.step.TrainStep`.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Iterator

import torch

from ..eval.monitor import collapse_std
from ..methods.base import Method
from .step import TrainStep


def epoch_batches(loader, method: Method, epoch: int) -> Iterator[dict]:
    """The epoch's batches as the steps see them. A batch is ``{"views", "skipped"}``; ``views`` is
    None when every image of the batch was unreadable."""
    return method.stream(loader.epoch(epoch))


@dataclass
class EpochTotals:
    """Sums over an epoch's steps, kept on the device (no synchronisation per step)."""

    loss_sum: torch.Tensor
    std_sum: torch.Tensor  # of std(z/|z|), the collapse monitor
    steps: int = 0
    skipped: list = field(default_factory=list)  # paths of unreadable images
    last: dict = field(default_factory=dict)  # the last step's outputs (loss, z, lr)
    started: float = field(default_factory=time.perf_counter)

    @property
    def seconds(self) -> float:
        return time.perf_counter() - self.started


def run_epoch(train_step: TrainStep, loader, epoch: int, first_step: int, device: torch.device,
              after_step: Callable[[int, dict, int], None]) -> EpochTotals:
    """Train one epoch; ``after_step(step, outputs, images)`` follows every step (``step`` counted
    after it, ``images`` this process's source images)."""
    totals = EpochTotals(torch.zeros((), device=device), torch.zeros((), device=device))
    step = first_step
    for batch in epoch_batches(loader, train_step.method, epoch):
        totals.skipped += batch["skipped"]
        if batch["views"] is None:
            continue
        out = train_step(batch["views"], step)
        totals.loss_sum += out["loss"].detach()
        totals.std_sum += collapse_std(out["z"])
        totals.steps += 1
        totals.last = out
        step += 1
        after_step(step, out, batch["views"][0].shape[0])
    return totals
