"""Linear evaluation (paper, section 2): a linear classifier on the frozen backbone's pooled features.

The backbone stays in eval mode with no gradient, so neither its weights nor its BN statistics
change; a sanity check after the first epoch compares it with the checkpoint on disk. The
classifier is ``nn.Linear`` (optionally after a non-affine ``BatchNorm1d``, as MoCo v3 and MAE
do), trained with cross-entropy and a per-step cosine lr, and tested on the centre crop (for
in-memory datasets at native size: the image itself); top-1 and top-5 are reported.

Two recipes (:data:`LINEAR_PRESETS`):

* ``lars``: the paper's -- LARS, batch 4096, 90 epochs, cosine, momentum 0.9, no weight decay,
  lr = 0.1 x batch / 256. The paper quotes base lr 0.02 for its TPU runs; 0.1 is what the
  authors' released PyTorch linear evaluation uses with the same scaling rule, so we take it.
* ``sgd``: SGD at lr 30 (no batch scaling), batch 256, 90 epochs, cosine, momentum 0.9, no weight
  decay (the paper: about 1% below LARS).

With ``cached_features`` (and always without augmentation) the features of the un-augmented
images are computed once and the classifier trains on them: seconds on a CPU instead of a
backbone pass per step.

Both recipes are ImageNet's. On a small dataset they take few steps (Fashion-MNIST at batch
4096: 15 per epoch, 1,350 in all, against ImageNet's 28,000), and LARS, whose steps are relative
to the weight norm (eta 0.001), then stops short of convergence: on one Fashion-MNIST checkpoint
it gave 71.8% top-1 where 300 epochs gave 75.3% and a converged logistic regression 76.7%.
``--epochs``, ``--lr`` and ``--bn-head`` are there for that.
"""
from __future__ import annotations

import dataclasses
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Optional

import torch
import torch.nn.functional as F
from torch import nn

from ..data import load_dataset
from ..data.subset import subset
from ..models import input_channels
from ..optim import cosine_lr, set_lr
from ..optim.lars import build_lars
from .features import extract_features
from .frozen import assert_backbone_unchanged, backbone_state_from_disk, freeze
from .linear_views import build_crop_flip_views
from .pretrained import held_out_split, load_pretrained

Batches = Callable[[int], Iterator[tuple[torch.Tensor, torch.Tensor]]]  # epoch -> (features, labels) batches


@dataclass
class LinearConfig:
    """Everything a linear evaluation depends on; saved with its result."""

    preset: str = "lars"
    optimizer: str = "lars"  # "lars" or "sgd"
    epochs: int = 90
    batch_size: int = 4096
    base_lr: float = 0.1
    scale_lr: bool = True  # lr = base_lr x batch / 256 (the batch actually used, when the dataset is smaller)
    momentum: float = 0.9
    weight_decay: float = 0.0
    lars_eta: float = 0.001  # LARS trust coefficient (as the released code's LARC)
    bn_head: bool = False  # a non-affine BatchNorm1d before the linear layer (MoCo v3 / MAE)
    augment: bool = True  # crop + flip training views; False implies cached_features
    crop_scale_min: float = 0.08  # RandomResizedCrop area range (min, 1); 0.08 is torchvision's, as the paper
    cached_features: bool = False  # extract features once and train on them
    dataset: str = ""  # "": the dataset the checkpoint was trained on
    data_dir: Optional[str] = None
    train_limit: int = 0  # N training images, a class-stratified random subset (data/subset.py); 0: all
    eval_limit: int = 0  # N held-out images, chosen the same way; 0: all
    split: str = ""  # the held-out split; "": the one the run was monitored on (eval.pretrained.held_out_split)
    image_size: int = 0  # 0: the checkpoint's training size (same dataset) or the native size
    device: str = "cpu"  # "cpu", "cuda", "cuda:1" or "auto"
    seed: int = 0
    feature_batch_size: int = 512  # batch of the (no-grad) feature extraction


def _lars_recipe() -> LinearConfig:
    """The paper's recipe (LARS, batch 4096, base lr 0.1 scaled by batch/256, 90 epochs)."""
    return LinearConfig(preset="lars")


def _sgd_recipe() -> LinearConfig:
    """SGD lr 30 at batch 256 (no scaling), 90 epochs: the paper's alternative, about 1% lower."""
    return LinearConfig(preset="sgd", optimizer="sgd", batch_size=256, base_lr=30.0, scale_lr=False)


LINEAR_PRESETS: dict[str, Callable[[], LinearConfig]] = {"lars": _lars_recipe, "sgd": _sgd_recipe}


def linear_config(preset: str = "lars", **overrides) -> LinearConfig:
    """A preset's config with ``overrides`` (field=value) applied; ``None`` values are ignored."""
    if preset not in LINEAR_PRESETS:
        raise ValueError(f"unknown linear-evaluation preset {preset!r}; choose one of: {', '.join(LINEAR_PRESETS)}")
    cfg = LINEAR_PRESETS[preset]()
    fields = {f.name for f in dataclasses.fields(LinearConfig)}
    for key, value in overrides.items():
        if key not in fields:
            raise ValueError(f"unknown LinearConfig field {key!r}; valid: {', '.join(sorted(fields))}")
        if value is not None:
            setattr(cfg, key, value)
    return _validate(cfg)


def _validate(cfg: LinearConfig) -> LinearConfig:
    if cfg.optimizer not in ("lars", "sgd"):
        raise ValueError(f"optimizer must be 'lars' or 'sgd', got {cfg.optimizer!r}")
    for name in ("epochs", "batch_size", "feature_batch_size"):
        if getattr(cfg, name) <= 0:
            raise ValueError(f"{name} must be positive, got {getattr(cfg, name)}")
    if cfg.base_lr <= 0:
        raise ValueError(f"the learning rate must be positive, got {cfg.base_lr}")
    if not 0 < cfg.crop_scale_min <= 1:
        raise ValueError(f"crop_scale_min must be in (0, 1], got {cfg.crop_scale_min}")
    return cfg


def peak_lr(cfg: LinearConfig, batch_size: int) -> float:
    """The lr at the start of the cosine schedule for the batch actually used."""
    return cfg.base_lr * batch_size / 256 if cfg.scale_lr else cfg.base_lr


# ------------------------------------------------------------------------------------------ the classifier


def build_linear_head(num_features: int, num_classes: int, bn: bool = False) -> nn.Sequential:
    """``[BatchNorm1d(affine=False)] -> Linear``; weights N(0, 0.01) and zero bias, as the released code."""
    linear = nn.Linear(num_features, num_classes)
    nn.init.normal_(linear.weight, std=0.01)
    nn.init.zeros_(linear.bias)
    layers: list[nn.Module] = [nn.BatchNorm1d(num_features, affine=False)] if bn else []
    return nn.Sequential(*layers, linear)


def build_linear_optimizer(head: nn.Module, cfg: LinearConfig, lr: float) -> torch.optim.Optimizer:
    """LARS (the bias excluded from adaptation) or plain SGD, as ``cfg.optimizer`` says."""
    if cfg.optimizer == "lars":
        return build_lars(head, lr=lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, eta=cfg.lars_eta)
    return torch.optim.SGD(head.parameters(), lr=lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


def train_head(head: nn.Module, batches: Batches, steps_per_epoch: int, cfg: LinearConfig, lr: float,
               after_epoch: Optional[Callable[[int, float], None]] = None) -> list[float]:
    """Train ``head`` with cross-entropy over ``cfg.epochs`` epochs of ``batches(epoch)``.

    The lr follows a cosine from ``lr`` to 0 over all steps. ``after_epoch(epoch, mean_loss)`` runs
    after each epoch (the sanity check, progress). Returns the mean loss of every epoch.
    """
    optimizer = build_linear_optimizer(head, cfg, lr)
    total_steps = cfg.epochs * steps_per_epoch
    step, losses = 0, []
    for epoch in range(cfg.epochs):
        head.train()
        loss_sum: Optional[torch.Tensor] = None  # summed on the device: no host sync per step
        n = 0
        for feats, labels in batches(epoch):
            set_lr(optimizer, cosine_lr(step, total_steps, lr))
            loss = F.cross_entropy(head(feats), labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss_sum = loss.detach() if loss_sum is None else loss_sum + loss.detach()
            n, step = n + 1, step + 1
        if loss_sum is None:
            raise ValueError(f"epoch {epoch + 1} of linear evaluation had no usable batch (every image unreadable?)")
        mean_loss = (loss_sum / n).item()
        if not math.isfinite(mean_loss):
            raise FloatingPointError(f"the linear classifier's loss became {mean_loss} in epoch {epoch + 1}; "
                                     "lower the learning rate (--lr)")
        losses.append(mean_loss)
        if after_epoch is not None:
            after_epoch(epoch, mean_loss)
    return losses


def feature_batches(features: torch.Tensor, labels: torch.Tensor, batch_size: int, seed: int = 0,
                    min_batch: int = 1) -> Batches:
    """Shuffled batches of cached features, a new order each epoch; batches under ``min_batch``
    are dropped (a BN head cannot normalise a batch of one)."""
    def batches(epoch: int):
        order = torch.randperm(len(features), generator=torch.Generator().manual_seed(seed * 100_003 + epoch))
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            if len(idx) >= min_batch:
                yield features[idx], labels[idx]
    return batches


def train_on_features(features: torch.Tensor, labels: torch.Tensor, num_classes: int, cfg: LinearConfig,
                      after_epoch: Optional[Callable[[int, float], None]] = None) -> tuple[nn.Module, list[float]]:
    """Train a linear head on cached features ``(N, F)`` with labels ``(N,)``; returns (head, epoch losses)."""
    if len(features) == 0:
        raise ValueError("no training features: the training split is empty or every image was unreadable")
    torch.manual_seed(cfg.seed)
    batch = min(cfg.batch_size, len(features))
    head = build_linear_head(features.shape[1], num_classes, cfg.bn_head).to(features.device)
    batches = feature_batches(features, labels, batch, cfg.seed, min_batch=2 if cfg.bn_head else 1)
    losses = train_head(head, batches, math.ceil(len(features) / batch), cfg, peak_lr(cfg, batch), after_epoch)
    return head, losses


@torch.no_grad()
def topk_accuracy(head: nn.Module, features: torch.Tensor, labels: torch.Tensor, ks: tuple[int, ...] = (1, 5),
                  chunk: int = 8192) -> dict[int, float]:
    """Top-k accuracy in percent of ``head`` on ``features`` for each k (clipped to the class count)."""
    head.eval()
    correct = {k: 0 for k in ks}
    for start in range(0, len(features), chunk):
        logits = head(features[start:start + chunk])
        y = labels[start:start + chunk].to(logits.device)
        ranked = logits.topk(min(max(ks), logits.shape[1]), dim=1).indices  # (b, max_k)
        for k in ks:
            correct[k] += int((ranked[:, :k] == y[:, None]).any(dim=1).sum())
    n = max(1, len(features))
    return {k: 100.0 * correct[k] / n for k in ks}


# ------------------------------------------------------------------------------------------ end to end


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


LARS_MIN_STEPS = 2000  # below this many steps the LARS recipe was seen to stop well short (see the module doc)


def lars_too_few_steps(cfg: LinearConfig, train_images: int) -> Optional[str]:
    """A warning when the LARS recipe gets too few steps on ``train_images`` images to converge, else None."""
    if cfg.optimizer != "lars":
        return None
    steps = math.ceil(train_images / min(cfg.batch_size, train_images)) * cfg.epochs
    if steps >= LARS_MIN_STEPS:
        return None
    return (f"the LARS recipe gets only {steps} steps here ({cfg.epochs} epochs of {train_images} images at batch "
            f"{min(cfg.batch_size, train_images)}; the paper's ImageNet run takes about 28,000) and stops short of "
            f"convergence on small datasets: use --preset sgd (lr 30, batch 256) or more --epochs")


def linear_evaluate(checkpoint: str | Path, cfg: Optional[LinearConfig] = None,
                    progress: Optional[Callable[[str], None]] = None,
                    warn: Callable[[str], None] = lambda message: print(f"warning: {message}", file=sys.stderr)) -> dict:
    """Linear evaluation of a checkpoint's frozen backbone; returns top1/top5 (%), epochs, time and context.

    ``progress(line)`` gets one line per epoch when given; ``warn(message)`` a warning about the
    recipe (LARS on too few steps). Raises ``CheckpointError`` for a bad
    checkpoint and :class:`~simsiam.eval.frozen.BackboneChanged` if the backbone was modified.
    """
    cfg = _validate(cfg or linear_config())
    t_start = time.perf_counter()
    device = _device(cfg.device)
    model, pre_cfg = load_pretrained(checkpoint, device)
    backbone = freeze(model.backbone)
    reference = backbone_state_from_disk(checkpoint)

    name = cfg.dataset or pre_cfg.data.dataset
    data_dir = cfg.data_dir if cfg.data_dir is not None else pre_cfg.data.data_dir
    train_set = subset(load_dataset(name, "train", data_dir), cfg.train_limit)
    split = cfg.split or held_out_split(pre_cfg, name)
    test_set = subset(load_dataset(name, split, data_dir), cfg.eval_limit)
    num_classes = max(train_set.num_classes, test_set.num_classes)
    if num_classes == 0:
        raise ValueError(f"dataset {name!r} has no labels; linear evaluation needs a labelled dataset")
    in_channels = input_channels(backbone)
    if train_set.channels != in_channels:
        raise ValueError(f"dataset {name!r} has {train_set.channels}-channel images but the checkpoint's backbone "
                         f"takes {in_channels}; evaluate on a dataset with {in_channels} channel(s)")
    few_steps = lars_too_few_steps(cfg, len(train_set))
    if few_steps:
        warn(few_steps)
    image_size = cfg.image_size or (pre_cfg.data.image_size if name == pre_cfg.data.dataset else 0)
    extract = dict(device=device, batch_size=cfg.feature_batch_size, image_size=image_size)
    cached = cfg.cached_features or not cfg.augment

    def check_and_report(epoch: int, loss: float) -> None:
        if epoch == 0:  # the official code's sanity check, once the first epoch has run
            assert_backbone_unchanged(backbone, reference, when="after the first epoch")
        if progress:
            progress(f"epoch {epoch + 1}/{cfg.epochs} loss {loss:.4f} ({time.perf_counter() - t_start:.0f}s)")

    torch.manual_seed(cfg.seed)
    if cached:
        train_x, train_y, _, skipped = extract_features(backbone, train_set, **extract)
        train_x, train_y = train_x.to(device), train_y.to(device)
        head, losses = train_on_features(train_x, train_y, num_classes, cfg, check_and_report)
        batch = min(cfg.batch_size, len(train_x))
    else:
        size = image_size or train_set.image_size or 224
        batch = min(cfg.batch_size, len(train_set))
        views = build_crop_flip_views(train_set, size, batch, device, cfg.seed, cfg.crop_scale_min)

        def backbone_batches(epoch: int):
            for x, y in views.epoch(epoch):
                with torch.no_grad():
                    feats = backbone(x)  # (B, num_features), frozen: no graph kept
                if len(y) >= (2 if cfg.bn_head else 1):
                    yield feats, y

        head = build_linear_head(backbone.num_features, num_classes, cfg.bn_head).to(device)
        losses = train_head(head, backbone_batches, len(views), cfg, peak_lr(cfg, batch), check_and_report)
        skipped = []
    test_x, test_y, _, test_skipped = extract_features(backbone, test_set, **extract)
    assert_backbone_unchanged(backbone, reference, when="at the end of linear evaluation")
    acc = topk_accuracy(head, test_x.to(device), test_y, (1, 5))
    return {
        "checkpoint": str(checkpoint),
        "dataset": name,
        "split": split,
        "train_images": len(train_set),
        "test_images": len(test_x),
        "num_classes": num_classes,
        "feature_dim": backbone.num_features,
        "mode": "cached features" if cached else "augmented (crop + flip)",
        "top1": acc[1],
        "top5": acc[5],
        "epochs": cfg.epochs,
        "batch_size": batch,
        "lr": peak_lr(cfg, batch),
        "final_loss": losses[-1],
        "time_s": round(time.perf_counter() - t_start, 2),
        "unreadable": len(skipped) + len(test_skipped),
        "config": dataclasses.asdict(cfg),
    }
