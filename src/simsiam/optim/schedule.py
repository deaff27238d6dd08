"""The paper's lr rule and the per-step cosine schedule, each a pure function of its inputs.

lr = base_lr x global_batch / 256 (the linear scaling rule) is computed in :func:`scaled_lr` and
nowhere else. Parameter groups tagged ``fix_lr`` (the predictor, Table 1c) keep the initial lr.
"""
from __future__ import annotations

import math

import torch

from ..config import OptimConfig


def scaled_lr(optim_cfg: OptimConfig) -> float:
    return optim_cfg.base_lr * optim_cfg.batch_size / 256


def cosine_lr(step: int, total_steps: int, peak_lr: float, warmup_steps: int = 0) -> float:
    """Linear warmup from 0 to ``peak_lr`` over ``warmup_steps``, then a half cosine to 0 at ``total_steps``."""
    if warmup_steps > 0 and step < warmup_steps:
        return peak_lr * (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return peak_lr * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Apply the schedule's value to every group except those tagged ``fix_lr``."""
    for group in optimizer.param_groups:
        group["lr"] = group["initial_lr"] if group.get("fix_lr") else lr
