"""One epoch of training: the loader's batches, through the method's ``stream`` hook, each one step.

``pretrain`` runs every epoch with :func:`run_epoch`; ``simsiam bench`` draws the same batches
from :func:`epoch_batches` into the same :class:`~simsiam.train.step.TrainStep`.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Iterator, Optional

import torch

from ..eval.monitor import collapse_std
from ..methods.base import Method
from .finite_guard import APPLIED
from .step import TrainStep
from .threads import ThreadTuner


def epoch_batches(loader, method: Method, epoch: int, start_batch: int = 0) -> Iterator[dict]:
    """The epoch's batches as the steps see them, from batch ``start_batch`` on (a run resumed
    mid-epoch). A batch is ``{"views", "skipped"}``; ``views`` is None when every image of the
    batch was unreadable."""
    return method.stream(loader.epoch(epoch, start_batch))


@dataclass
class EpochTotals:
    """Sums over an epoch's steps, kept on the device (no synchronisation per step), and the
    position in the epoch: what a mid-epoch checkpoint saves (:meth:`state`) to resume from."""

    loss_sum: torch.Tensor
    std_sum: torch.Tensor  # of std(z/|z|), the collapse monitor
    steps: int = 0  # steps taken, the skipped ones (non-finite gradients, finite_guard.py) included
    skipped_steps: int = 0  # of those, not applied: left out of the loss and std sums
    batches: int = 0  # batches taken from the loader, also those with no usable image
    skipped: list = field(default_factory=list)  # paths of unreadable images
    last: dict = field(default_factory=dict)  # the last step's outputs (loss, z, lr)
    stopped: bool = False  # the epoch ended early: a stop was requested
    earlier_seconds: float = 0.0  # spent on this epoch before the run was resumed
    started: float = field(default_factory=time.perf_counter)

    @classmethod
    def empty(cls, device: torch.device) -> "EpochTotals":
        return cls(torch.zeros((), device=device), torch.zeros((), device=device))

    @property
    def applied_steps(self) -> int:
        return self.steps - self.skipped_steps

    @property
    def seconds(self) -> float:
        return self.earlier_seconds + time.perf_counter() - self.started

    def state(self) -> dict:
        """The position and sums, as plain values and CPU tensors (a checkpoint's ``position``)."""
        return {"batches": self.batches, "steps": self.steps, "skipped_steps": self.skipped_steps,
                "loss_sum": self.loss_sum.detach().cpu(),
                "std_sum": self.std_sum.detach().cpu(), "skipped": list(self.skipped), "seconds": self.seconds,
                "z_dim": int(self.last["z"].shape[1]) if "z" in self.last else 0, "lr": self.last.get("lr", 0.0)}

    @classmethod
    def from_state(cls, state: dict, device: torch.device) -> "EpochTotals":
        totals = cls(state["loss_sum"].to(device), state["std_sum"].to(device), steps=state["steps"],
                     skipped_steps=state.get("skipped_steps", 0), batches=state["batches"], skipped=list(state["skipped"]), earlier_seconds=state["seconds"])
        if state["z_dim"]:  # what the epoch record reads of the last step, should no step follow
            totals.last = {"z": torch.zeros(1, state["z_dim"]), "lr": state["lr"]}
        return totals


def run_epoch(train_step: TrainStep, loader, epoch: int, first_step: int, device: torch.device,
              after_step: Callable[[int, dict, int, EpochTotals], bool],
              totals: Optional[EpochTotals] = None, threads: Optional[ThreadTuner] = None) -> EpochTotals:
    """Train one epoch, or its rest from ``totals`` (a resumed run's position); ``after_step(step,
    outputs, images, totals)`` follows every step (``step`` counted after it, ``images`` this
    process's source images) and returns True to end the epoch there (``totals.stopped``).
    ``threads`` (run.threads=auto) gets each iteration's seconds, batch and step."""
    totals = totals or EpochTotals.empty(device)
    step = first_step
    since = time.perf_counter()
    for batch in epoch_batches(loader, train_step.method, epoch, totals.batches):
        totals.batches += 1
        totals.skipped += batch["skipped"]
        if batch["views"] is None:
            continue
        out = train_step(batch["views"], step)
        if threads is not None:
            now = time.perf_counter()
            threads.after_step(now - since)
            since = now
        if out["verdict"] == APPLIED:
            totals.loss_sum += out["loss"].detach()
            totals.std_sum += collapse_std(out["z"])
        else:
            totals.skipped_steps += 1
        totals.steps += 1
        totals.last = out
        step += 1
        if after_step(step, out, batch["views"][0].shape[0], totals):
            totals.stopped = True
            break
    return totals
