"""Datasets held entirely in memory as one uint8 tensor."""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset


def _as_labels(labels, n: int) -> torch.Tensor:
    """Return ``labels`` as an int64 tensor of length ``n`` (``None``: all unlabelled, -1)."""
    if labels is None:
        return torch.full((n,), -1, dtype=torch.int64)
    labels = torch.as_tensor(np.asarray(labels), dtype=torch.int64).reshape(-1)
    if labels.numel() != n:
        raise ValueError(f"got {labels.numel()} labels for {n} images")
    return labels


def _check_stats(name: str, channels: int, mean: Sequence[float], std: Sequence[float]) -> None:
    if len(mean) != channels or len(std) != channels:
        raise ValueError(f"{name}: mean/std need {channels} values (one per channel), got {len(mean)}/{len(std)}")
    if any(s <= 0 for s in std):
        raise ValueError(f"{name}: std values must be positive, got {tuple(std)}")


class InMemoryImages(Dataset):
    """Images in one contiguous ``torch.uint8`` tensor of shape (N, C, H, W).

    The batched training pipeline reads ``images`` directly; ``__getitem__``
    yields PIL images for the per-image (torchvision transforms) pipeline.
    ``labels`` is an int64 tensor with -1 marking unlabelled images.
    """

    subset_of: Optional[dict] = None  # set by data.subset: {"images": size before, "seed": ...}

    def __init__(
        self,
        images,
        labels,
        name: str,
        num_classes: int,
        mean: Sequence[float],
        std: Sequence[float],
    ):
        images = torch.as_tensor(images)
        if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] not in (1, 3):
            raise ValueError(
                f"{name}: images must be a uint8 tensor (N, C, H, W) with C in (1, 3), "
                f"got {images.dtype} of shape {tuple(images.shape)}"
            )
        self.images = images.contiguous()
        self.labels = _as_labels(labels, images.shape[0])
        self.name = name
        self.channels = int(images.shape[1])
        self.num_classes = int(num_classes)
        height, width = images.shape[2:]
        self.image_size = int(height) if height == width else 0  # 0: not square
        _check_stats(name, self.channels, mean, std)
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index: int) -> tuple[Image.Image, int]:
        """Return (PIL image in mode "L" or "RGB", label)."""
        pixels = self.images[index].numpy()
        # uint8 (H, W) becomes mode "L" and uint8 (H, W, 3) mode "RGB".
        if self.channels == 1:
            img = Image.fromarray(pixels[0])
        else:
            img = Image.fromarray(np.ascontiguousarray(pixels.transpose(1, 2, 0)))
        return img, int(self.labels[index])

    def __repr__(self) -> str:
        return (
            f"InMemoryImages(name={self.name!r}, n={len(self)}, channels={self.channels}, "
            f"image_size={self.image_size}, num_classes={self.num_classes})"
        )
