"""What a shard-reading DataLoader worker makes of each image, and how it puts a batch together.

Two ways, one per pipeline (``loaders.ShardViewLoader``):

- :class:`EncodedBytes` (the batched pipeline, the default): the image's bytes as they are in the
  tar, and :func:`collate_encoded` hands a batch of them on as a list of byte arrays. A worker then
  only reads the tar; the main process decodes the whole batch in one ``torchvision.io.decode_jpeg``
  call on the training device (``encoded_decode.py``, as the encoded pipeline does) and makes the
  views with ``augment.BatchAugment``. Decoding one image at a time with PIL in the workers was
  most of their work, on the cores the step needs (docs/PERFORMANCE.md, "WebDataset shards").
- :class:`PerImageViews` (``data.pipeline=per_image``): the reference, PIL/torchvision views made
  per image in the worker and stacked by ``loaders._collate``.

Either way an item is ``(payload, label, index)``, or the line saying why the image cannot be used.
On the per-image pipeline a batch's unusable images are replaced here by repeats of its usable ones
(see ``loaders._collate``); on the batched one after the decode, in the main process, where the
images that fail to decode are known too.
"""
from __future__ import annotations

import numpy as np
import torch

from .decode import decode_image


class EncodedBytes:
    """An image's bytes -> ``(bytes as a uint8 array, name)``, left encoded: the main process decodes
    the batch (``view_seed`` is unused: the views are drawn there too)."""

    def __call__(self, data: bytes, name: str, view_seed: int):
        # A copy the decoder may own: torch warns on (and must not write through) a read-only buffer.
        return np.frombuffer(bytearray(data), dtype=np.uint8), name


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


def collate_encoded(batch: list) -> dict:
    """A batch of :class:`EncodedBytes` items -> ``{"blobs": [uint8 arrays], "names", "labels",
    "index", "skipped"}``, the usable images only, in the stream's order (the main process refills
    the batch to its size once it knows which ones decode)."""
    good = [b for b in batch if not isinstance(b, str)]
    return {"blobs": [blob for (blob, _), _, _ in good], "names": [name for (_, name), _, _ in good],
            "labels": torch.tensor([label for _, label, _ in good], dtype=torch.long),
            "index": torch.tensor([index for _, _, index in good], dtype=torch.long),
            "skipped": [b for b in batch if isinstance(b, str)]}
