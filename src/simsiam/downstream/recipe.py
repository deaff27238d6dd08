"""The fine-tuning recipe, one set of numbers for every contender and label budget.

Where each choice comes from:

* **End to end, SGD with Nesterov momentum 0.9, one learning rate for backbone and head, a cosine
  decay to 0 per step, no warmup**: the semi-supervised fine-tuning of SimCLR (Chen et al. 2020,
  appendix B.5) and BYOL (Grill et al. 2020, appendix C.2), which fine-tune all weights together.
* **The head starts at zero** (SimCLR), so the first steps fit the head on the pretrained
  features. ``head_init="probe"`` starts it as the linear probe of the starting backbone instead
  (LP-FT, Kumar et al. 2022); on Fashion-MNIST at 1% of the labels it was no better on one label
  seed and fell to 40% on another (docs/FINETUNE.md), so it is not the default.
* **The learning rate is searched** over :attr:`FinetuneRecipe.lrs` (per 256 images, scaled by the
  batch) on the validation part of the labels, for every contender alike -- the fine-tuned
  backbone and the same network from scratch -- as BYOL searches its fine-tuning lr. The test
  split never chooses anything.
* **Weight decay 5e-4 on every weight**: the CPU presets' pretraining value; few labels over many
  epochs need the regularisation (SimCLR's ImageNet fine-tuning used none, with 12 and 128 times
  more labels per class than the 1% and 10% budgets here hold on Fashion-MNIST).
* **Crop + horizontal flip only** (SimCLR, BYOL), on the batched pipeline, with the pretraining
  run's crop scale range (Fashion-MNIST's milder 0.6 at 28 px); tested on the whole image.
* **BatchNorm in train mode**: statistics re-estimated on the labelled images, as SimCLR and
  BYOL fine-tune. Batches of one image are skipped (BN cannot normalise them).
* **A budget in steps**: ``max(epochs x steps per epoch, min_steps)``: 30 epochs (SimCLR's for
  10% of ImageNet), but at least 300 steps, so that 10 labels per class (a step an epoch) still
  trains long enough for the head and BN to settle, and 1,000 per class is not cut short.
* **The linear probe** on the frozen backbone: cached features of the un-augmented images, a
  non-affine BatchNorm before the linear layer (MoCo v3 / MAE's probe, which makes one lr grid
  serve every backbone), SGD, at least 500 steps, its lr searched on the same validation part.
* **kNN**: the labelled training part as the bank, cosine similarity, votes weighted by
  exp(sim / 0.1) (the paper's monitor), k searched on the validation part.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

CONTENDERS = ("finetune", "scratch", "linear", "knn", "pixels_knn")
CONTENDER_NAMES = {
    "finetune": "SimSiam, fine-tuned",
    "scratch": "same network from scratch",
    "linear": "linear probe (frozen)",
    "knn": "kNN on features (frozen)",
    "pixels_knn": "kNN on pixels",
}


@dataclass
class FinetuneRecipe:
    lrs: tuple[float, ...] = (0.01, 0.03, 0.1, 0.3)  # base lr per 256 images, searched on the validation part
    backbone_lr_scale: float = 1.0  # the backbone's lr relative to the head's
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4
    batch_size: int = 128
    epochs: int = 30
    min_steps: int = 300
    head_init: str = "zero"  # "zero" (SimCLR), or "probe": the linear probe's head, then fine-tuning (LP-FT)
    crop_scale_min: Optional[float] = None  # None: the pretraining run's aug.crop_scale_min (or 0.08)
    probe_lrs: tuple[float, ...] = (0.03, 0.3, 3.0)  # the linear probe's lr (BN before the layer)
    probe_min_steps: int = 500
    knn_ks: tuple[int, ...] = (5, 20, 100)
    knn_t: float = 0.1
    amp: str = "off"  # "off" (fp32), "bf16" or "auto" (bf16 where the CPU has it natively; train.speed)

    def batch_for(self, images: int) -> int:
        """The batch for ``images`` training images: the recipe's, or all of them when fewer."""
        return max(1, min(self.batch_size, images))

    def steps_for(self, images: int) -> int:
        """Optimiser steps for ``images`` training images (the last partial batch is dropped)."""
        per_epoch = max(1, images // self.batch_for(images))
        return max(self.epochs * per_epoch, self.min_steps)

    def peak_lr(self, base_lr: float, images: int) -> float:
        return base_lr * self.batch_for(images) / 256

    def probe_epochs(self, images: int, batch: int = 256) -> int:
        return max(100, math.ceil(self.probe_min_steps / math.ceil(images / min(batch, images))))
