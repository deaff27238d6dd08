"""Training one classifier end to end on labelled images, and measuring it.

One function serves the fine-tuned backbone and the one from scratch: what differs between them is
only the backbone they start from, so the comparison is the same code at the same budget.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..eval.features import eval_mode, extract_features
from ..eval.linear_views import build_crop_flip_views
from ..optim import cosine_lr
from ..train.speed import autocast
from .recipe import FinetuneRecipe


class Diverged(ValueError):
    """The loss became non-finite at one learning rate (a search skips that rate)."""


def fit_classifier(classifier: nn.Module, train_set, recipe: FinetuneRecipe, base_lr: float, *, size: int,
                   device: torch.device, seed: int, crop_scale_min: float) -> dict:
    """Train ``classifier`` (backbone and head, BN in train mode) with cross-entropy on crop + flip
    views of ``train_set`` for the recipe's steps; returns the steps, lr and last epoch's mean loss.

    Raises :class:`Diverged` when the loss becomes non-finite."""
    n = len(train_set)
    batch, steps, lr = recipe.batch_for(n), recipe.steps_for(n), recipe.peak_lr(base_lr, n)
    views = build_crop_flip_views(train_set, size, batch, device, seed, crop_scale_min)
    # The backbone's rate is the head's times recipe.backbone_lr_scale (1: one rate for all weights).
    groups = [{"params": classifier.backbone.parameters(), "scale": recipe.backbone_lr_scale},
              {"params": classifier.head.parameters(), "scale": 1.0}]
    optimizer = torch.optim.SGD(groups, lr=lr, momentum=recipe.momentum, nesterov=recipe.nesterov,
                                weight_decay=recipe.weight_decay)
    classifier.train()
    step, epoch, mean_loss = 0, 0, math.nan
    while step < steps:
        loss_sum, used = torch.zeros((), device=device), 0  # summed on the device: one host sync an epoch
        for x, y in views.epoch(epoch):
            if len(y) < 2:  # BN in train mode cannot normalise a batch of one image
                continue
            for group in optimizer.param_groups:
                group["lr"] = group["scale"] * cosine_lr(step, steps, lr)
            with autocast(recipe.amp, device):
                logits = classifier(x)
            loss = F.cross_entropy(logits.float(), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss_sum += loss.detach()
            used, step = used + 1, step + 1
            if step >= steps:
                break
        if used == 0:
            raise ValueError("no batch of at least 2 readable images to fine-tune on")
        mean_loss = float(loss_sum) / used
        if not math.isfinite(mean_loss):
            raise Diverged(f"the fine-tuning loss became {mean_loss} at lr {lr:.4g} (epoch {epoch + 1})")
        epoch += 1
    return {"steps": steps, "batch_size": batch, "lr": lr, "base_lr": base_lr, "epochs": epoch, "final_loss": mean_loss}


@torch.no_grad()
def logits_of(net: nn.Module, dataset, *, size: int, device: torch.device, amp: str = "off"
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """``(outputs (N, K), labels (N,))`` of ``net`` in eval mode on the un-augmented images."""
    with eval_mode(net), autocast(amp, device):
        out, labels, _, _ = extract_features(net, dataset, device=device, image_size=size)
    return out.float(), labels


def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Top-1 accuracy in percent."""
    if len(labels) == 0:
        return math.nan
    return 100.0 * float((logits.argmax(dim=1) == labels).float().mean())
