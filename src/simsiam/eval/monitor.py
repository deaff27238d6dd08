"""What shows, while training runs, whether the representation learns or collapses (Figure 2).

- ``collapse_std``: the per-channel std of l2-normalised z, averaged over channels. For a healthy
  representation spread over the unit sphere it is about 1/sqrt(d); collapsed to one point it is
  0. Reported as std x sqrt(d) too, so 1 means healthy whatever d is.
- ``KnnMonitor``: weighted kNN accuracy of pooled backbone features on a labelled held-out split,
  the bank built from un-augmented training images in eval mode.
"""
from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from . import eval_mode, extract_features
from .knn_sharded import sharded_knn_sweep


def collapse_std(z: torch.Tensor) -> torch.Tensor:
    """std over the batch of each channel of z/||z||, averaged over channels (a 0-dim tensor)."""
    return F.normalize(z.float(), dim=1).std(dim=0).mean()


def normalised_std(std: float, dim: int) -> float:
    """std x sqrt(d): about 1 healthy, 0 collapsed."""
    return std * math.sqrt(dim)


# Recorded besides monitor.knn_t at every evaluation: 0.1 (InstDisc's and this package's default) and
# 0.2 (what the paper's authors used for their monitor), so that docs/RECIPES.md can compare them.
COMPARED_TEMPERATURES = (0.1, 0.2)


class KnnMonitor:
    def __init__(self, bank_set, query_set, *, k: int, t: float, device: torch.device, image_size: int = 0,
                 batch_size: int = 512, channels_last: bool = False):
        if query_set.num_classes == 0 or bank_set.num_classes == 0:
            raise ValueError("the kNN monitor needs labelled data; set data.eval_split='' to turn it off")
        self.bank_set, self.query_set = bank_set, query_set
        self.k, self.t, self.device = k, t, device
        self.image_size, self.batch_size, self.channels_last = image_size, batch_size, channels_last
        self.num_classes = max(bank_set.num_classes, query_set.num_classes)

    @torch.no_grad()
    def __call__(self, backbone: nn.Module) -> dict[str, float]:
        kw = dict(device=self.device, batch_size=self.batch_size, image_size=self.image_size,
                  channels_last=self.channels_last)
        with eval_mode(backbone):
            bank, bank_y, _, _ = extract_features(backbone, self.bank_set, **kw)
            query, query_y, _, _ = extract_features(backbone, self.query_set, **kw)
        # Under torchrun every rank holds both feature sets (gathered); the queries are split to classify.
        ts = sorted({self.t, *COMPARED_TEMPERATURES})  # the same top-k: the extra temperatures cost nothing
        accs = sharded_knn_sweep(query.to(self.device), query_y, bank.to(self.device), bank_y, self.num_classes,
                                 (self.k,), ts)
        return {"knn_acc": accs[f"k={self.k},t={self.t}"],
                **{f"knn_acc_t{t:g}": accs[f"k={self.k},t={t}"] for t in ts}}


def is_collapsed(std_sqrt_d: Optional[float], threshold: float) -> bool:
    return std_sqrt_d is not None and std_sqrt_d < threshold
