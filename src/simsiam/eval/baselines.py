"""Reference points for a kNN figure: raw pixels, and the same network at its random init.

A learned representation is useful only if it beats both under the same kNN protocol
(SIMSIAM.md section 8: raw normalised pixels give 78.9% on Fashion-MNIST at k=200, T=0.1).
"""
from __future__ import annotations

import torch

from ..augment import normalize_batch
from ..config import Config
from ..data import InMemoryImages, load_dataset
from ..data.subset import subset
from ..methods import build_method
from ..resolve import resolve
from ..seeding import seed_everything
from .features import eval_mode, extract_features
from .knn import knn_accuracy


def pixel_features(dataset: InMemoryImages, standardise: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Flattened pixels ``(N, C*H*W)`` in [0, 1] (the paper-notes' "raw pixels" protocol: 78.9% on
    Fashion-MNIST), or standardised with the dataset's mean and std (a stricter bar: 81.8%)."""
    if standardise:
        x = normalize_batch(dataset.images, dataset.mean, dataset.std)
    else:
        x = dataset.images.float() / 255
    return x.flatten(1), dataset.labels


@torch.no_grad()
def baseline_knn(cfg: Config, *, k: int = 200, t: float = 0.1, device: str = "cpu") -> dict[str, float]:
    """kNN accuracy (%) of pixels (in-memory datasets only) and of a randomly initialised backbone
    built from ``cfg`` with its seed, on ``cfg``'s dataset (train split as bank, eval split as queries)."""
    cfg = resolve(cfg)
    d = cfg.data
    bank_set = subset(load_dataset(d.dataset, "train", d.data_dir), d.train_limit)
    query_set = subset(load_dataset(d.dataset, d.eval_split or "test", d.data_dir), d.eval_limit)
    num_classes = max(bank_set.num_classes, query_set.num_classes)
    out: dict[str, float] = {}
    if isinstance(bank_set, InMemoryImages):
        for name, standardise in (("raw_pixels", False), ("standardised_pixels", True)):
            bank, bank_y = pixel_features(bank_set, standardise)
            query, query_y = pixel_features(query_set, standardise)
            out[name] = knn_accuracy(query, query_y, bank, bank_y, num_classes, k, t)
    seed_everything(cfg.run.seed)
    backbone = build_method(cfg, bank_set.channels).backbone.to(device)
    kw = dict(device=torch.device(device), image_size=d.image_size)
    with eval_mode(backbone):
        bank, bank_y, _, _ = extract_features(backbone, bank_set, **kw)
        query, query_y, _, _ = extract_features(backbone, query_set, **kw)
    out["random_init"] = knn_accuracy(query, query_y, bank, bank_y, num_classes, k, t)
    return out
