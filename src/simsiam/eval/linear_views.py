"""Training views for linear evaluation: RandomResizedCrop + horizontal flip, nothing else.

The paper's linear classifier is trained on random crops (torchvision's default scale range
(0.08, 1)) and flips of the training images, and tested on the centre crop. Two pipelines give
the same distribution of views:

* in-memory datasets: :class:`~simsiam.augment.BatchAugment` on whole uint8 batches on the
  device, with every colour op switched off (no worker processes, no PIL);
* image files: torchvision per image in DataLoader workers; unreadable files are skipped.

Each yields ``(images (B, C, size, size) normalised, labels (B,))`` batches, reshuffled every
epoch from a seed, the last batch kept even when smaller (as the official linear evaluation).
"""
from __future__ import annotations

import math
import sys
from typing import Iterator

import torch
from torch.utils.data import DataLoader, RandomSampler

from ..augment import BatchAugment, build_view_transform
from ..config import AugConfig
from ..data import InMemoryImages
from ..data.loaders import default_workers, epoch_seed
from .features import TransformedImages

# torchvision's RandomResizedCrop default scale, as the paper's linear evaluation uses.
LINEAR_CROP_SCALE = (0.08, 1.0)


def crop_flip_aug(crop_scale_min: float = LINEAR_CROP_SCALE[0]) -> AugConfig:
    """An AugConfig with crop + flip only: every colour op and the blur have probability 0."""
    return AugConfig(recipe="cifar", crop_scale_min=crop_scale_min, crop_scale_max=LINEAR_CROP_SCALE[1],
                     flip_p=0.5, jitter_p=0.0, grayscale_p=0.0, blur_p=0.0)


class BatchedCropFlip:
    """Crop + flip views of an in-memory dataset, made on whole batches with tensor ops."""

    def __init__(self, dataset: InMemoryImages, size: int, batch_size: int, device: torch.device, seed: int = 0,
                 crop_scale_min: float = LINEAR_CROP_SCALE[0]):
        self.images = dataset.images.to(device)  # (N, C, H, W) uint8, kept on the device
        self.labels = dataset.labels.to(device)
        self.sizes = None if dataset.sizes is None else dataset.sizes.to(device)  # whole photos' (h, w)
        self.batch_size, self.device, self.seed = batch_size, device, seed
        self.augment = BatchAugment(crop_flip_aug(crop_scale_min), size, dataset.channels, dataset.mean, dataset.std)

    def __len__(self) -> int:
        return math.ceil(len(self.images) / self.batch_size)

    def epoch(self, epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = torch.randperm(len(self.images), generator=torch.Generator().manual_seed(epoch_seed(self.seed, epoch)))
        gen = torch.Generator(device=self.device).manual_seed(epoch_seed(self.seed, epoch, 1))
        for start in range(0, len(order), self.batch_size):
            idx = order[start:start + self.batch_size].to(self.device)
            sizes = None if self.sizes is None else self.sizes[idx]
            yield self.augment(self.images[idx], gen, sizes), self.labels[idx]


def _collate(batch):
    """(views, labels) of the readable images of ``batch`` (items of :class:`TransformedImages`)."""
    good = [b for b in batch if not isinstance(b, str)]
    for path in (b for b in batch if isinstance(b, str)):
        print(f"warning: skipping unreadable image {path}", file=sys.stderr)
    if not good:
        return None
    return torch.stack([g[0] for g in good]), torch.tensor([g[1] for g in good], dtype=torch.long)


class PerImageCropFlip:
    """Crop + flip views of image files, decoded and transformed per image in DataLoader workers."""

    def __init__(self, dataset, size: int, batch_size: int, device: torch.device, seed: int = 0,
                 crop_scale_min: float = LINEAR_CROP_SCALE[0], num_workers: int = -1):
        transform = build_view_transform(crop_flip_aug(crop_scale_min), size, dataset.channels, dataset.mean, dataset.std)
        self.dataset = TransformedImages(dataset, transform)
        self.batch_size, self.device, self.seed = batch_size, device, seed
        self.workers = num_workers if num_workers >= 0 else default_workers()

    def __len__(self) -> int:
        return math.ceil(len(self.dataset) / self.batch_size)

    def epoch(self, epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        gen = torch.Generator().manual_seed(epoch_seed(self.seed, epoch))
        torch.manual_seed(epoch_seed(self.seed, epoch, 1))  # transforms run in the main process when workers=0
        loader = DataLoader(self.dataset, batch_size=self.batch_size, sampler=RandomSampler(self.dataset, generator=gen),
                            num_workers=self.workers, collate_fn=_collate, generator=gen,
                            pin_memory=self.device.type == "cuda")
        for batch in loader:
            if batch is not None:
                yield batch[0].to(self.device, non_blocking=True), batch[1].to(self.device, non_blocking=True)


def build_crop_flip_views(dataset, size: int, batch_size: int, device: torch.device, seed: int = 0,
                          crop_scale_min: float = LINEAR_CROP_SCALE[0]):
    """The batched pipeline for in-memory datasets, the per-image one for files."""
    if isinstance(dataset, InMemoryImages):
        return BatchedCropFlip(dataset, size, batch_size, device, seed, crop_scale_min)
    return PerImageCropFlip(dataset, size, batch_size, device, seed, crop_scale_min)
