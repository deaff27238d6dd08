"""One training step, as the paper's Algorithm 1: views -> loss -> backward -> optimiser -> schedule.

``pretrain`` and ``simsiam bench`` both run :class:`TrainStep`, so the step that is measured is
the step that trains.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Callable, Optional

import torch
from torch import nn

from ..config import Config
from ..methods.base import Method
from ..optim import cosine_lr, scaled_lr, set_lr
from ..parallel import distributed as dist
from ..parallel.sync_bn import convert_sync_batchnorm
from . import speed
from .finite_guard import APPLIED, SWITCH_TO_FP32, NonFiniteSteps, gradients_finite


@dataclass(frozen=True)
class LrSchedule:
    """The per-step lr: linear warmup, then a half cosine to 0 at ``total_steps`` (``optim.cosine_lr``)."""

    peak_lr: float
    total_steps: int
    warmup_steps: int = 0

    @classmethod
    def from_config(cls, cfg: Config, steps_per_epoch: int) -> "LrSchedule":
        if cfg.optim.epochs <= 0:  # a budget preset before train/budget.py set its epochs: lr 0 from step 1
            raise ValueError("optim.epochs is 0 (a budget in images): call train.budget.settle_budget(cfg, "
                             "number_of_training_images) first, or set optim.epochs")
        return cls(peak_lr=scaled_lr(cfg.optim), total_steps=cfg.optim.epochs * steps_per_epoch,
                   warmup_steps=round(cfg.optim.warmup_epochs * steps_per_epoch))

    def __call__(self, step: int) -> float:
        return cosine_lr(step, self.total_steps, self.peak_lr, self.warmup_steps)


class _StepModule(nn.Module):
    """Makes the method's ``training_step`` a module's forward, so that DDP syncs its gradients."""

    def __init__(self, method: Method):
        super().__init__()
        self.method = method

    def forward(self, views):
        return self.method.training_step(views)


def wrap_for_training(method: Method, cfg: Config, device: torch.device, warn: Callable[[str], None] = print,
                      info: Optional[Callable[[str], None]] = None) -> nn.Module:
    """The module whose forward is the method's loss: in channels_last, with SyncBN and DDP under
    torchrun, compiled when ``run.compile`` is "true" (eager, with a warning, if compilation fails;
    ``info`` hears the compile time). "auto" is settled before this by ``compile_pays.choose``
    (pretrain and bench do); left unsettled it means eager."""
    if cfg.run.channels_last:
        method.to(memory_format=torch.channels_last)
    module: nn.Module = _StepModule(method)
    if dist.is_enabled():
        # Every BN of backbone and heads normalises over the global batch (paper); torch's own
        # SyncBatchNorm is GPU-only, so the conversion picks a CPU-capable one on gloo.
        module = convert_sync_batchnorm(module, device) if cfg.run.sync_bn else module
        module = nn.parallel.DistributedDataParallel(module, device_ids=[device.index] if device.type == "cuda" else None)
    if cfg.run.compile in ("true", True):  # the whole step, DDP included (torch's advice)
        module = speed.compile_with_fallback(module, warn, info=info)
    return module


class TrainStep:
    """One SGD step of the method on a batch of views; ``step`` counts the steps taken so far.

    A step whose gradients are not finite is not applied (train/finite_guard.py); ``amp_requested``
    is ``run.amp`` as the user set it (``cfg.run.amp`` may hold what "auto" resolved to), which
    decides whether such a step switches the run from bf16 to fp32.
    """

    def __init__(self, method: Method, optimizer: torch.optim.Optimizer, schedule: LrSchedule, cfg: Config,
                 device: torch.device, warn: Callable[[str], None] = print, amp_requested: str = "",
                 info: Optional[Callable[[str], None]] = None):
        self.method, self.optimizer, self.schedule = method, optimizer, schedule
        self.loss_module = wrap_for_training(method, cfg, device, warn, info)
        self.autocast = speed.autocast(cfg.run.amp, device)
        self.nonfinite = NonFiniteSteps(amp_requested or cfg.run.amp,
                                        bf16=speed.amp_dtype(cfg.run.amp, device) is torch.bfloat16)
        self.parameters = [p for p in method.parameters() if p.requires_grad]
        self.channels_last = cfg.run.channels_last

    def __call__(self, views: tuple[torch.Tensor, ...], step: int) -> dict[str, torch.Tensor]:
        """Returns the method's outputs (``loss``, ``z``), the ``lr`` the step used and the guard's
        ``verdict`` on its gradients (finite_guard: APPLIED, or why the step was skipped)."""
        lr = self.schedule(step)
        set_lr(self.optimizer, lr)  # groups tagged fix_lr (the predictor, Table 1c) keep theirs
        with self.autocast:
            out = self.loss_module(speed.to_memory_format(views, self.channels_last))
        self.optimizer.zero_grad(set_to_none=True)
        out["loss"].backward()
        verdict = self.nonfinite.verdict(gradients_finite(self.parameters), step)
        if verdict == APPLIED:
            self.optimizer.step()
            self.method.on_step_end(step, self.schedule.total_steps)  # e.g. a momentum encoder's update
        elif verdict == SWITCH_TO_FP32:
            self.autocast = contextlib.nullcontext()
        return {**out, "lr": lr, "verdict": verdict}

    @property
    def compile_state(self) -> str:
        """"off", "on", or "failed (eager)" when compilation fell back."""
        module = self.loss_module
        if not isinstance(module, speed.CompiledWithFallback):
            return "off"
        return "on" if module.is_compiled else "failed (eager)"
