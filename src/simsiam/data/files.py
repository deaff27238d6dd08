"""Datasets of image files on disk, decoded lazily one at a time."""

from __future__ import annotations

import os
from typing import Iterator, Optional, Sequence

from PIL import Image
from torch.utils.data import Dataset

from .decode import decode_image

# HEIC/HEIF (phones' default format) decode through the optional pillow-heif extra; listed either way,
# so that a folder of them without it is reported file by file rather than silently ignored.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".heic", ".heif", ".avif")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def imagenet_stats(channels: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """ImageNet's mean and std for ``channels`` channels (their averages for one)."""
    if channels == 3:
        return IMAGENET_MEAN, IMAGENET_STD
    return (sum(IMAGENET_MEAN) / 3,), (sum(IMAGENET_STD) / 3,)


def is_image_file(name: str) -> bool:
    """True when ``name`` has one of ``IMAGE_EXTENSIONS`` (case-insensitive) and is not hidden."""
    # Hidden files include macOS "._x.jpg" resource forks, which are not images.
    return not name.startswith(".") and name.lower().endswith(IMAGE_EXTENSIONS)


def _walk(root: str) -> Iterator[tuple[str, list[str], list[str]]]:
    """os.walk that follows directory symlinks (datasets are often linked in) but never loops."""
    seen: set[str] = set()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in seen:
            dirnames[:] = []
            continue
        seen.add(real)
        # Sorting in place fixes the walk order, so results are reproducible across filesystems.
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        yield dirpath, dirnames, sorted(filenames)


def list_images(root: str) -> list[str]:
    """All image files under ``root`` (recursive), in a deterministic sorted order."""
    return [
        os.path.join(dirpath, name)
        for dirpath, _, filenames in _walk(root)
        for name in filenames
        if is_image_file(name)
    ]


def _decode(path: str, mode: str, side: int = 0) -> Image.Image:
    """``path`` decoded upright into ``mode`` (``decode.decode_image``); raises UnreadableImage."""
    return decode_image(path, mode, side)


class ImageFiles(Dataset):
    """A list of image paths with labels (-1: unlabelled), decoded on access.

    ``image_size`` is 0 because files may have any size. ``__getitem__``
    returns (PIL image in mode "L" or "RGB", label) and raises
    ``UnreadableImage`` when the file cannot be fully decoded.
    """

    subset_of: Optional[dict] = None  # set by data.subset: {"images": size before, "seed": ...}

    def __init__(
        self,
        paths: Sequence[str],
        labels: Sequence[int],
        name: str,
        num_classes: int,
        channels: int = 3,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        classes: Sequence[str] = (),
    ):
        if len(paths) != len(labels):
            raise ValueError(f"{name}: got {len(labels)} labels for {len(paths)} paths")
        if channels not in (1, 3):
            raise ValueError(f"{name}: channels must be 1 or 3, got {channels}")
        if len(mean) != channels or len(std) != channels:
            raise ValueError(f"{name}: mean/std need {channels} values, got {len(mean)}/{len(std)}")
        self.paths = [os.fspath(p) for p in paths]
        self.labels = [int(y) for y in labels]
        self.name = name
        self.num_classes = int(num_classes)
        self.channels = channels
        self.image_size = 0  # variable: each file has its own size
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        self.classes = list(classes)
        self._mode = "L" if channels == 1 else "RGB"

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[Image.Image, int]:
        """Return (decoded PIL image, label); raise UnreadableImage for a corrupt file."""
        return _decode(self.paths[index], self._mode), self.labels[index]

    def __repr__(self) -> str:
        return (
            f"ImageFiles(name={self.name!r}, n={len(self)}, channels={self.channels}, "
            f"num_classes={self.num_classes})"
        )
