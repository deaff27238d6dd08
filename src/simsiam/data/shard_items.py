"""What a shard-reading DataLoader worker makes of each image, and how it puts a batch together.

Two ways, one per pipeline (``loaders.ShardViewLoader``):

- :class:`StoredPixels` (the batched pipeline, the default): the image decoded into the form the
  decoded-image cache stores (``cache.stored_pixels``: upright, shorter side at the stored side,
  whole up to 4:3, landscape), and :func:`collate_slots` lays a batch of them in one uint8 array
  of slots, as the cache's rows, for ``augment.BatchAugment`` to make the views in the main process.
  A worker then only decodes: the views of a whole batch cost the main process a few milliseconds.
- :class:`PerImageViews` (``data.pipeline=per_image``): the reference, PIL/torchvision views made
  per image in the worker and stacked by ``loaders._collate``.

Either way an item is ``(payload, label, index)``, or the line saying why the image cannot be used;
a batch's unusable images are replaced by repeats of its usable ones (see ``loaders._collate``).
"""
from __future__ import annotations

import numpy as np
import torch

from .cache import fill_slot, stored_pixels
from .decode import decode_image


class StoredPixels:
    """An image's bytes -> ``(pixels (C, side, long), upright (h, w))``, exactly what the cache would
    hold for the same file (``view_seed`` is unused: the views are drawn in the main process)."""

    def __init__(self, side: int, channels: int):
        self.side, self.channels = side, channels

    def __call__(self, data: bytes, name: str, view_seed: int):
        return stored_pixels(data, self.side, self.channels, name=name)


class PerImageViews:
    """An image's bytes -> ``num_views`` views by the per-image transform, drawn from ``view_seed``."""

    def __init__(self, transform, num_views: int, channels: int):
        self.transform, self.num_views = transform, num_views
        self.mode = "L" if channels == 1 else "RGB"

    def __call__(self, data: bytes, name: str, view_seed: int):
        img = decode_image(data, self.mode, name=name)
        # The global RNG, seeded per image and put back after: the caller's draws are left alone.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(view_seed)
            return tuple(self.transform(img) for _ in range(self.num_views))


def collate_slots(batch: list) -> dict:
    """A batch of :class:`StoredPixels` items -> ``{"images": uint8 (B, C, side, W), "sizes": (B, 2),
    "labels", "index", "skipped"}``, ``W`` the longest side in the batch (``side`` for squares);
    ``images`` is None when no image of the batch could be used."""
    skipped = [b for b in batch if isinstance(b, str)]
    good = [b for b in batch if not isinstance(b, str)]
    if not good:
        return {"images": None, "sizes": None, "labels": torch.zeros(0, dtype=torch.long),
                "index": torch.zeros(0, dtype=torch.long), "skipped": skipped}
    good = [good[i % len(good)] for i in range(len(batch))]  # the batch's size kept, as loaders._collate
    channels, side = good[0][0][0].shape[:2]
    width = max(pixels.shape[2] for (pixels, _), _, _ in good)
    images = np.empty((len(good), channels, side, width), dtype=np.uint8)
    for slot, ((pixels, _), _, _) in zip(images, good):
        fill_slot(slot, pixels)
    return {"images": torch.from_numpy(images), "sizes": torch.tensor([hw for (_, hw), _, _ in good]),
            "labels": torch.tensor([label for _, label, _ in good]),
            "index": torch.tensor([index for _, _, index in good]), "skipped": skipped}
