"""Reference points for a kNN figure: raw pixels, and the same network at its random init.

A learned representation is useful only if it beats both under the same kNN protocol
(SIMSIAM.md section 8: raw normalised pixels give 78.9% on Fashion-MNIST at k=200, T=0.1). They
are computed once per dataset, subset, network and protocol, and cached (:func:`cached_baseline_knn`),
so that every run can show them at its end and `simsiam knn --baselines` costs nothing after it.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from typing import Optional

import torch
import torch.nn.functional as F

from ..artifacts.checkpoint import write_atomic
from ..augment import normalize_batch
from ..config import Config
from ..data import InMemoryImages, load_dataset
from ..data.cache import decoded_if_configured
from ..data.subset import subset
from ..methods import build_method
from ..parallel import distributed as dist
from ..paths import cache_root
from ..resolve import resolve
from ..seeding import seed_everything
from .features import eval_mode, extract_features
from .knn import knn_accuracy

# Image files are compared as pixels at this side at most: 64x64 RGB Tiny-ImageNet at full size
# would be a 5 GB bank of pixel vectors; 32x32 keeps it at 1.2 GB.
MAX_PIXEL_SIDE = 32
NAMES = {"raw_pixels": "raw pixels in [0, 1]", "standardised_pixels": "standardised pixels",
         "random_init": "same network, random init"}


def pixel_features(dataset: InMemoryImages, standardise: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Flattened pixels ``(N, C*H*W)`` in [0, 1] (the paper-notes' "raw pixels" protocol: 78.9% on
    Fashion-MNIST), or standardised with the dataset's mean and std (a stricter bar: 81.8%)."""
    if standardise:
        x = normalize_batch(dataset.square_images(), dataset.mean, dataset.std)
    else:
        x = dataset.square_images().float() / 255
    return x.flatten(1), dataset.labels


class _FilePixels(torch.nn.Module):
    """The eval transform's normalised image as a pixel vector, at most MAX_PIXEL_SIDE a side;
    ``raw`` undoes the normalisation (pixels in [0, 1])."""

    def __init__(self, mean, std, raw: bool):
        super().__init__()
        self.mean = torch.tensor(mean).view(1, -1, 1, 1)
        self.std = torch.tensor(std).view(1, -1, 1, 1)
        self.raw = raw

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] > MAX_PIXEL_SIDE:
            x = F.interpolate(x, size=(MAX_PIXEL_SIDE, MAX_PIXEL_SIDE), mode="bilinear", antialias=True)
        if self.raw:
            x = x * self.std.to(x.device) + self.mean.to(x.device)
        return x.flatten(1)


def pixel_vectors(dataset, standardise: bool, **extract) -> tuple[torch.Tensor, torch.Tensor]:
    """``(pixel vectors, labels)`` of any dataset: in-memory images as stored, files through the eval
    transform at most MAX_PIXEL_SIDE a side (``extract``: :func:`extract_features`' keywords)."""
    if isinstance(dataset, InMemoryImages):
        return pixel_features(dataset, standardise)
    x, y, _, _ = extract_features(_FilePixels(dataset.mean, dataset.std, raw=not standardise), dataset, **extract)
    return x, y


@torch.no_grad()
def baseline_knn(cfg: Config, *, k: int = 200, t: float = 0.1, device: str = "cpu",
                 random_backbone: Optional[torch.nn.Module] = None) -> dict[str, float]:
    """kNN accuracy (%) of pixels and of a randomly initialised backbone built from ``cfg`` with its
    seed, on ``cfg``'s dataset (train split as bank, eval split as queries, subsets as ``cfg`` says).

    ``random_backbone``: the network at its initialisation where ``cfg`` cannot build it (a backbone
    of your own, passed to ``pretrain``); it is used as it is, on ``device``.
    """
    cfg = resolve(cfg)
    d = cfg.data
    bank_set = decoded_if_configured(subset(load_dataset(d.dataset, "train", d.data_dir), d.train_limit), d)
    query_set = decoded_if_configured(subset(load_dataset(d.dataset, d.eval_split or "test", d.data_dir),
                                             d.eval_limit), d)
    num_classes = max(bank_set.num_classes, query_set.num_classes)
    kw = dict(device=torch.device(device), image_size=d.image_size)
    out: dict[str, float] = {}
    for name, standardise in (("raw_pixels", False), ("standardised_pixels", True)):
        out[name] = _pixel_knn(bank_set, query_set, standardise, num_classes, k, t, kw)
    seed_everything(cfg.run.seed)
    backbone = (random_backbone if random_backbone is not None else build_method(cfg, bank_set.channels).backbone)
    backbone = backbone.to(device)
    with eval_mode(backbone):
        bank, bank_y, _, _ = extract_features(backbone, bank_set, **kw)
        query, query_y, _, _ = extract_features(backbone, query_set, **kw)
    out["random_init"] = knn_accuracy(query, query_y, bank, bank_y, num_classes, k, t)
    return out


def _pixel_knn(bank_set, query_set, standardise: bool, num_classes: int, k: int, t: float, kw: dict) -> float:
    """kNN accuracy on pixel vectors. Its own function so that one variant's bank (5 GB for
    Tiny-ImageNet's 101,000 images at 64 px) is freed before the next is built; normalised in place,
    so the kNN does not copy it either."""
    bank, bank_y = pixel_vectors(bank_set, standardise, **kw)
    query, query_y = pixel_vectors(query_set, standardise, **kw)
    bank.div_(bank.norm(dim=1, keepdim=True).clamp_min(1e-12))
    return knn_accuracy(query, query_y, bank, bank_y, num_classes, k, t)


def _cache_key(cfg: Config, k: int, t: float) -> str:
    d = cfg.data
    what = {"dataset": d.dataset, "data_dir": os.path.abspath(os.path.expanduser(d.data_dir)) if d.data_dir else "",
            "eval_split": d.eval_split or "test", "train_limit": d.train_limit, "eval_limit": d.eval_limit,
            "image_size": d.image_size, "cache": [d.cache, d.cache_side, d.pipeline], "k": k, "t": t, "seed": cfg.run.seed, "method": cfg.method,
            "model": dataclasses.asdict(cfg.model), "version": 1}
    return hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()[:24]


def cached_baseline_knn(cfg: Config, *, k: int = 200, t: float = 0.1, device: str = "cpu") -> dict[str, float]:
    """:func:`baseline_knn`, read from the cache when this dataset, subset, network and protocol have
    been measured before (a changed file under ``data_dir`` is not detected: delete the cache)."""
    cfg = resolve(cfg)
    path = cache_root() / "baselines" / f"{cfg.data.dataset}-{_cache_key(cfg, k, t)}.json"
    cached = None
    if dist.is_main():
        try:
            cached = json.loads(path.read_text())
        except (OSError, ValueError):
            pass
    # Measuring is collective under torchrun (features are sharded): rank 0's verdict holds for all.
    cached = dist.broadcast_object(cached)
    if cached is not None:
        return cached
    result = baseline_knn(cfg, k=k, t=t, device=device)
    if dist.is_main():
        try:
            write_atomic(path, lambda fh: fh.write(json.dumps(result).encode()))
        except OSError:  # a read-only home is no reason to fail a run: the figures are still returned
            pass
    return result


def verdict(knn_acc: float, baselines: dict[str, float]) -> str:
    """One line comparing a kNN accuracy with the baselines, and what to try when it is below pixels."""
    parts = ", ".join(f"{NAMES[key]} {value:.2f}%" for key, value in baselines.items())
    line = f"kNN {knn_acc:.2f}% against {parts}"
    best_pixels = max(v for key, v in baselines.items() if key.endswith("pixels"))
    if knn_acc < best_pixels:
        line += (" -- BELOW the pixels: the representation is not yet worth more than the images themselves. "
                 "Try more steps (optim.epochs), a higher optim.base_lr, or a milder crop (aug.crop_scale_min) "
                 "for small images")
    return line
