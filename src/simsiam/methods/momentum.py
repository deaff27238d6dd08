"""Momentum (EMA) target encoders, shared by MoCo v2 and BYOL.

MoCo (He et al. 2020, eq. 2):        theta_k <- m theta_k + (1 - m) theta_q       (m constant)
BYOL (Grill et al. 2020, sec. 3.2):  xi <- tau xi + (1 - tau) theta,
                                     tau = 1 - (1 - tau_base) (cos(pi k / K) + 1) / 2
The target is a frozen copy of the online encoder: it never receives a gradient, only these updates.
"""
from __future__ import annotations

import copy
import math

import torch
from torch import nn


def frozen_copy(module: nn.Module) -> nn.Module:
    """A copy of ``module`` that starts equal to it and is excluded from the optimiser (no grad)."""
    target = copy.deepcopy(module)
    target.requires_grad_(False)
    return target


@torch.no_grad()
def ema_update(target: nn.Module, online: nn.Module, m: float) -> None:
    """target <- m * target + (1 - m) * online, parameter by parameter (BN statistics are the
    target's own: it runs in train mode and normalises with its batch's statistics)."""
    for t, o in zip(target.parameters(), online.parameters()):
        t.lerp_(o.detach(), 1.0 - m)  # lerp(t, o, w) = t + w (o - t) = (1 - w) t + w o


def cosine_momentum(step: int, total_steps: int, base: float) -> float:
    """BYOL's schedule: ``base`` at step 0, rising along a half cosine to 1 at ``total_steps``."""
    progress = min(1.0, step / max(1, total_steps))
    return 1.0 - (1.0 - base) * (math.cos(math.pi * progress) + 1.0) / 2.0
