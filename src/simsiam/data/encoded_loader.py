"""Batches of views from an encoded-image store: read, decoded and augmented a whole batch at a time.

The contract of ``loaders.BatchedViewLoader``, on a folder too large to keep decoded: the same
epoch order (one permutation from (seed, epoch), each rank its slice of every global batch), the
same generator for the view parameters, ``epoch(e, start_batch)`` yielding exactly the rest of
``epoch(e)``. Per batch: its bytes from the store (``encoded_store.EncodedImages.read``), decoded
in one call on the training device and put in the cache's stored form (``encoded_decode.py``),
then ``augment.BatchAugment`` as on a cached batch. An image that cannot be decoded is named in
the batch's ``skipped`` and replaced by a repeat of a readable one of the same batch, as the
per-image pipeline does (``loaders._collate``): every step has the configured batch size, and the
view parameters drawn per batch -- their count depends only on it -- keep resume exact.
"""
from __future__ import annotations

from typing import Iterator

import torch

from ..augment import BatchAugment
from ..config import Config
from ..parallel import distributed as dist
from .encoded_decode import decode_into_slots
from .encoded_store import EncodedImages
from .sampler import epoch_seed, local_batch_size, unusable_anywhere


class EncodedBatchLoader:
    def __init__(self, dataset: EncodedImages, cfg: Config, num_views: int, device: torch.device):
        if not cfg.data.image_size:
            raise ValueError("data.pipeline=encoded needs data.image_size (the views' size, e.g. 224)")
        self.dataset = dataset
        self.labels = torch.tensor(dataset.labels, dtype=torch.int64)
        self.side = cfg.data.cache_side or cfg.data.image_size  # the stored form's shorter side, as the cache's
        self.global_batch = cfg.optim.batch_size
        self.batch = local_batch_size(self.global_batch)
        self.num_views = num_views
        self.seed = cfg.run.seed
        self.device = device
        self.augment = BatchAugment(cfg.aug, cfg.data.image_size, dataset.channels, dataset.mean, dataset.std,
                                    kernel=cfg.data.augment_kernel)
        self.augment.uses_native(device)  # data.augment_kernel=native where it cannot be built: fail before training
        if len(dataset) < self.global_batch:
            raise ValueError(f"the dataset has {len(dataset)} training images, fewer than one batch "
                             f"(optim.batch_size={self.global_batch}); lower the batch size")

    def __len__(self) -> int:
        return len(self.dataset) // self.global_batch  # drop_last, as the other loaders

    def describe(self) -> str:
        return (f"encoded pipeline (image bytes from one memory-mapped store, JPEGs decoded in batches by "
                f"torchvision on {self.device.type}, stored side {self.side}px), {self.augment.describe(self.device)}")

    def _draw_only(self, gen: torch.Generator) -> None:
        """A batch's view parameters drawn and dropped: ``gen`` moves as if its views were made."""
        for _ in range(self.num_views):
            self.augment.sample_params(self.batch, gen, self.device, image_hw=(self.side, self.side))

    def epoch(self, epoch: int, start_batch: int = 0) -> Iterator[dict]:
        order = torch.randperm(len(self.dataset), generator=torch.Generator().manual_seed(epoch_seed(self.seed, epoch)))
        gen = torch.Generator(device=self.device).manual_seed(epoch_seed(self.seed, epoch, 1 + dist.rank()))
        r = dist.rank()
        for _ in range(start_batch):
            self._draw_only(gen)
        for b in range(start_batch, len(self)):
            idx = order[b * self.global_batch + r * self.batch: b * self.global_batch + (r + 1) * self.batch]
            batch = self._batch(idx.tolist(), gen)
            if dist.is_enabled() and unusable_anywhere(batch["views"] is None):
                batch["views"] = None  # every rank leaves this step out, or the others would wait in DDP for ever
            yield batch

    def _batch(self, idx: list[int], gen: torch.Generator) -> dict:
        d = self.dataset
        blobs = d.read(idx)
        slots, skipped = decode_into_slots(blobs, [d.paths[i] for i in idx], d.channels, self.side, self.device)
        skipped = [d.damaged(i) for i, blob in zip(idx, blobs) if blob is None] + skipped
        if slots is None:
            self._draw_only(gen)
            empty = torch.zeros(0, dtype=torch.long, device=self.device)
            return {"views": None, "labels": empty, "index": empty, "skipped": skipped}
        x, sizes, fill = slots  # unreadable ones replaced by repeats of readable ones
        views = tuple(self.augment(x, gen, sizes) for _ in range(self.num_views))
        index = torch.tensor([idx[k] for k in fill], dtype=torch.int64)
        return {"views": views, "labels": self.labels[index].to(self.device), "index": index.to(self.device),
                "skipped": skipped}
