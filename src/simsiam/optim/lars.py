"""LARS (You et al. 2017): SGD with momentum and a per-parameter trust ratio, for large batches.

The paper's linear evaluation trains the classifier with LARS at batch 4096. For each parameter
tensor w with gradient g::

    trust = eta * ||w|| / (||g|| + wd * ||w||)      (1 when ||w|| or ||g|| is 0)
    d     = trust * (g + wd * w)
    buf   = momentum * buf + d
    w     = w - lr * buf

Parameters in a group with ``lars_exclude=True`` (by convention biases and BN parameters, i.e.
1-D tensors; :func:`lars_param_groups` makes the split) get a plain SGD-with-momentum update:
no trust ratio and no weight decay. Scaling those by their own norm would make a bias that
starts at 0 stay at 0, and decaying them only hurts.
"""
from __future__ import annotations

from typing import Iterable, Optional

import torch
from torch import nn


class LARS(torch.optim.Optimizer):
    """Layer-wise adaptive rate scaling on top of SGD with momentum.

    Group options: ``lr``, ``momentum``, ``weight_decay``, ``eta`` (the trust coefficient) and
    ``lars_exclude`` (plain SGD for this group: no adaptation, no weight decay).
    """

    def __init__(self, params, lr: float, momentum: float = 0.9, weight_decay: float = 0.0,
                 eta: float = 0.001, lars_exclude: bool = False):
        if lr < 0 or momentum < 0 or weight_decay < 0 or eta <= 0:
            raise ValueError(f"LARS needs lr >= 0, momentum >= 0, weight_decay >= 0 and eta > 0; got "
                             f"lr={lr}, momentum={momentum}, weight_decay={weight_decay}, eta={eta}")
        defaults = dict(lr=lr, momentum=momentum, weight_decay=weight_decay, eta=eta, lars_exclude=lars_exclude)
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                d = p.grad
                if not group["lars_exclude"]:
                    d = d.add(p, alpha=group["weight_decay"]) * trust_ratio(
                        p, p.grad, group["eta"], group["weight_decay"])
                state = self.state[p]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.zeros_like(p)
                buf = state["momentum_buffer"]
                buf.mul_(group["momentum"]).add_(d)
                p.add_(buf, alpha=-group["lr"])
        return loss


def trust_ratio(weight: torch.Tensor, grad: torch.Tensor, eta: float, weight_decay: float) -> torch.Tensor:
    """``eta * ||w|| / (||g|| + wd * ||w||)``, or 1 when either norm is 0 (a 0-dim tensor).

    Computed with tensor ops (``torch.where``), not Python branches, so that a GPU step never
    waits for a norm to reach the host.
    """
    w_norm = weight.norm()
    g_norm = grad.norm()
    ratio = eta * w_norm / (g_norm + weight_decay * w_norm)
    both_positive = (w_norm > 0) & (g_norm > 0)
    return torch.where(both_positive, ratio, torch.ones_like(ratio))


def lars_param_groups(params: nn.Module | Iterable[nn.Parameter], **group_options) -> list[dict]:
    """Two groups: tensors with more than one dimension (adapted, decayed) and the 1-D ones
    (biases, BN scales and shifts: ``lars_exclude=True``). Empty groups are left out.

    ``params``: a module or an iterable of parameters; only those with ``requires_grad`` are kept.
    ``group_options`` (e.g. ``lr=...``) are copied into both groups.
    """
    if isinstance(params, nn.Module):
        params = params.parameters()
    trainable = [p for p in params if p.requires_grad]
    adapted = [p for p in trainable if p.ndim > 1]
    excluded = [p for p in trainable if p.ndim <= 1]
    groups: list[dict] = []
    if adapted:
        groups.append({"params": adapted, "lars_exclude": False, **group_options})
    if excluded:
        groups.append({"params": excluded, "lars_exclude": True, **group_options})
    return groups


def build_lars(params: nn.Module | Iterable[nn.Parameter], lr: float, momentum: float = 0.9,
               weight_decay: float = 0.0, eta: float = 0.001, exclude_1d: bool = True,
               extra_group_options: Optional[dict] = None) -> LARS:
    """LARS over ``params``; with ``exclude_1d`` biases and BN parameters get plain SGD."""
    extra = extra_group_options or {}
    if exclude_1d:
        groups = lars_param_groups(params, **extra)
    else:
        if isinstance(params, nn.Module):
            params = params.parameters()
        groups = [{"params": [p for p in params if p.requires_grad], **extra}]
    return LARS(groups, lr=lr, momentum=momentum, weight_decay=weight_decay, eta=eta)
