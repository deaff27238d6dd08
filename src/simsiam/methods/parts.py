"""Small parts the methods share: the optimiser groups with the predictor apart, a float32 region."""
from __future__ import annotations

import torch
from torch import nn


def with_predictor_group(method: nn.Module, predictor: nn.Module, fix_pred_lr: bool) -> list[dict]:
    """Every trainable parameter of ``method`` in an "encoder" group, except ``predictor``'s, which
    get a "predictor" group tagged ``fix_lr`` (read by ``optim.set_lr``). Momentum encoders and
    queues have no trainable parameter and so are in no group."""
    pred = [p for p in predictor.parameters() if p.requires_grad]
    pred_ids = {id(p) for p in pred}
    rest = [p for p in method.parameters() if p.requires_grad and id(p) not in pred_ids]
    groups = [{"params": rest, "fix_lr": False, "name": "encoder"}]
    if pred:
        groups.append({"params": pred, "fix_lr": fix_pred_lr, "name": "predictor"})
    return groups


def no_autocast(t: torch.Tensor):
    """A context in which ops on ``t``'s device run in the dtype they are given (float32 for the
    similarity logits of the contrastive and clustering losses), even inside training's autocast."""
    return torch.autocast(device_type=t.device.type, enabled=False)
