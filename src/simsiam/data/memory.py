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


def _check_sizes(name: str, sizes: torch.Tensor, shape) -> torch.Tensor:
    """Whole photos' (height, width): their shorter side the slot's height, their longer within its width."""
    n, _, height, width = shape
    if sizes.shape != (n, 2):
        raise ValueError(f"{name}: sizes must be (N, 2) = ({n}, 2), got {tuple(sizes.shape)}")
    if len(sizes) and (sizes.min(dim=1).values.ne(height).any() or sizes.max(dim=1).values.gt(width).any()):
        raise ValueError(f"{name}: each image's shorter side must be {height} and its longer at most {width}")
    return sizes


class InMemoryImages(Dataset):
    """Images in one contiguous ``torch.uint8`` tensor of shape (N, C, H, W).

    The batched training pipeline reads ``images`` directly; ``__getitem__``
    yields PIL images for the per-image (torchvision transforms) pipeline.
    ``labels`` is an int64 tensor with -1 marking unlabelled images.

    ``sizes`` (N, 2) int64, or None: a decoded cache of whole photos (``cache.py``) holds each
    image's upright (height, width), the image itself lying landscape in the top-left of a padded
    (C, H, W) slot with H = the shorter side -- a portrait one transposed -- and its last column
    repeated to the slot's edge. None: every image fills its slot as it is (CIFAR, square caches).
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
        sizes=None,
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
        self.sizes = None if sizes is None else _check_sizes(name, torch.as_tensor(sizes, dtype=torch.int64),
                                                             images.shape)
        if self.sizes is not None:
            self.image_size = int(height)  # whole photos: the stored shorter side, their centre squares' side
        _check_stats(name, self.channels, mean, std)
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)

    def __len__(self) -> int:
        return self.images.shape[0]

    def square_images(self, index=None) -> torch.Tensor:
        """The images at ``index`` (all when None) as evaluation sees them, uint8 (B, C, H, H): the
        stored array itself, or for whole photos each one's centre square, upright -- what a
        cache of centre squares held (offset ``(long - H) // 2``)."""
        images = self.images if index is None else self.images[index]
        if self.sizes is None:
            return images
        sizes = self.sizes if index is None else self.sizes[torch.as_tensor(index).cpu()]
        side = images.shape[2]
        offset = (sizes.max(dim=1).values - side) // 2  # (B,)
        columns = (offset.view(-1, 1) + torch.arange(side)).to(images.device)  # (B, side)
        columns = columns.view(-1, 1, 1, side).expand(-1, images.shape[1], side, side)
        squares = images.gather(3, columns)
        portrait = (sizes[:, 0] > sizes[:, 1]).to(images.device).view(-1, 1, 1, 1)
        return torch.where(portrait, squares.transpose(2, 3), squares)

    def whole_image(self, index: int) -> torch.Tensor:
        """Image ``index`` as stored, without padding and upright: uint8 (C, h, w)."""
        if self.sizes is None:
            return self.images[index]
        h, w = self.sizes[index].tolist()
        if h > w:
            return self.images[index, :, :w, :h].transpose(1, 2)
        return self.images[index, :, :h, :w]

    def __getitem__(self, index: int) -> tuple[Image.Image, int]:
        """Return (PIL image in mode "L" or "RGB", label): the whole image, upright."""
        pixels = self.whole_image(index).numpy()
        # uint8 (H, W) becomes mode "L" and uint8 (H, W, 3) mode "RGB".
        if self.channels == 1:
            img = Image.fromarray(np.ascontiguousarray(pixels[0]))
        else:
            img = Image.fromarray(np.ascontiguousarray(pixels.transpose(1, 2, 0)))
        return img, int(self.labels[index])

    def __repr__(self) -> str:
        return (
            f"InMemoryImages(name={self.name!r}, n={len(self)}, channels={self.channels}, "
            f"image_size={self.image_size}, num_classes={self.num_classes})"
        )
