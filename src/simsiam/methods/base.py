"""The method contract: everything the training loop may call on a method, and nothing else.

A method is an ``nn.Module`` built as ``Method(cfg, backbone)``. The loop (``train.step`` and
``train.loop``) calls only what this class names; the optional hooks have no-op defaults here, so
the loop never asks whether a method has them.

State to checkpoint is the module's ``state_dict()``: parameters and registered buffers (a
momentum encoder, a queue of negatives, per-image moving-average targets). State a method keeps
in plain attributes is not checkpointed, so anything that must survive a resume is a buffer.
"""
from __future__ import annotations

import abc
from typing import Iterable, Iterator

import torch
from torch import nn


class Method(nn.Module, abc.ABC):
    backbone: nn.Module  # f's backbone: what evaluation and export take from a run
    num_views: int = 2  # augmented views per image that the data pipeline must provide

    @abc.abstractmethod
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """The projector output z of a batch of images, ``(B, d)``."""

    @abc.abstractmethod
    def training_step(self, views: tuple[torch.Tensor, ...]) -> dict[str, torch.Tensor]:
        """The loss of one batch of views (``"loss"``) and one view's projections, detached (``"z"``),
        for the collapse monitor."""

    @abc.abstractmethod
    def param_groups(self) -> list[dict]:
        """Optimiser groups of the trainable parameters; a group tagged ``fix_lr`` keeps its initial lr."""

    def stream(self, batches: Iterable[dict]) -> Iterator[dict]:
        """Sees the epoch's batches before their steps (section 5's variants cache targets ahead).
        The default passes them through."""
        return iter(batches)

    def resumable_at(self, batches_done: int) -> bool:
        """Whether a checkpoint written after ``batches_done`` batches of an epoch resumes exactly.
        State a method keeps outside its buffers between steps (section 5's k-step cache) makes some
        positions unresumable; the loop then waits for the next one before it stops."""
        return True

    def on_step_end(self, step: int, total_steps: int) -> None:
        """Called after each optimiser step (a momentum encoder's update). The default does nothing."""
