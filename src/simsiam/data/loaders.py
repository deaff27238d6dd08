"""Training data pipelines: each yields ``{"views": (x1, x2, ...), "labels", "index", "skipped"}`` batches.

``index`` holds the images' positions in the dataset (per-image state such as section 5's eta bank).

- :class:`BatchedViewLoader`: the dataset is one uint8 tensor on the training device and views
  are made by tensor operations on whole batches (``augment.BatchAugment``). No worker processes,
  no PIL: on CPU every core goes to the model, on GPU the augmentation is nearly free.
- :class:`PerImageViewLoader`: the reference path -- PIL/torchvision transforms per image in
  DataLoader workers, as the official code runs. Needed for file folders.
- :class:`ShardViewLoader`: WebDataset shards streamed (``shard_stream.py``): data that need no
  random access, nor one disk. By default the tars are only read (in the main process on a CPU, in
  DataLoader workers on a GPU), and the main process decodes each batch of bytes as
  :class:`EncodedBatchLoader` does and makes its
  views as :class:`BatchedViewLoader` does; ``data.pipeline=per_image`` runs the per-image
  transforms in the workers instead.

All are deterministic functions of (seed, epoch, rank), and ``epoch(e, start_batch=b)`` yields
exactly the batches ``b, b+1, ...`` of ``epoch(e)``: resuming from a checkpoint written at any
step replays the batches an uninterrupted run would have seen.
"""
from __future__ import annotations

import os
from typing import Iterator

import torch
from torch.utils.data import DataLoader, Dataset

from ..augment import BatchAugment, build_view_transform
from ..config import Config
from ..parallel import distributed as dist
from .encoded_decode import decode_into_slots, decoder_unavailable
from .encoded_loader import EncodedBatchLoader
from .encoded_store import EncodedImages
from .errors import UnreadableImage
from .memory import InMemoryImages
from .sampler import EpochSampler, epoch_seed, local_batch_size, unusable_anywhere  # noqa: F401 (re-exported)
from .shard_items import EncodedBytes, PerImageViews, collate_encoded
from .shard_stream import ShardStream
from .shards import ShardedImages, shard_reader


class BatchedViewLoader:
    def __init__(self, dataset: InMemoryImages, cfg: Config, num_views: int, device: torch.device):
        self.images = dataset.images.to(device)  # (N, C, H, W) uint8, kept on the device
        self.labels = dataset.labels.to(device)
        # Whole photos (a cache of rectangles): each one's (h, w), the crops' frame; None: the array's.
        self.sizes = None if dataset.sizes is None else dataset.sizes.to(device)
        self.global_batch = cfg.optim.batch_size
        self.batch = local_batch_size(self.global_batch)
        self.num_views = num_views
        self.seed = cfg.run.seed
        self.device = device
        size = cfg.data.image_size or dataset.image_size
        self.augment = BatchAugment(cfg.aug, size, dataset.channels, dataset.mean, dataset.std,
                                    kernel=cfg.data.augment_kernel)
        self.augment.uses_native(device)  # data.augment_kernel=native where it cannot be built: fail before training
        if len(self.images) < self.global_batch:
            raise ValueError(f"the dataset has {len(self.images)} training images, fewer than one batch "
                             f"(optim.batch_size={self.global_batch}); lower the batch size")

    def __len__(self) -> int:
        return len(self.images) // self.global_batch  # drop_last, as the paper's loader

    def describe(self) -> str:
        return f"batched pipeline, {self.augment.describe(self.device)}"

    def epoch(self, epoch: int, start_batch: int = 0) -> Iterator[dict]:
        # One permutation shared by all ranks; each rank takes its slice of every global batch.
        # Moved to the device once per epoch: a per-batch copy from pageable memory would make CUDA
        # wait for the queued work each step.
        order = torch.randperm(len(self.images), generator=torch.Generator().manual_seed(epoch_seed(self.seed, epoch)))
        order = order.to(self.device)
        gen = torch.Generator(device=self.device).manual_seed(epoch_seed(self.seed, epoch, 1 + dist.rank()))
        r = dist.rank()
        for _ in range(start_batch * self.num_views):
            # The skipped batches' draws: how many numbers a view takes depends only on the batch's
            # size, so drawing the parameters alone leaves ``gen`` exactly where making them would.
            self.augment.sample_params(self.batch, gen, self.device, image_hw=tuple(self.images.shape[-2:]),
                                       image_sizes=None if self.sizes is None else self.sizes[:self.batch])
        for b in range(start_batch, len(self)):
            idx = order[b * self.global_batch + r * self.batch: b * self.global_batch + (r + 1) * self.batch]
            x = self.images[idx]
            sizes = None if self.sizes is None else self.sizes[idx]
            views = tuple(self.augment(x, gen, sizes) for _ in range(self.num_views))
            yield {"views": views, "labels": self.labels[idx], "index": idx, "skipped": []}


class _MultiView(Dataset):
    """``num_views`` independent draws of the transform per image; the path when unreadable.

    Items are keyed ``(view_seed, index)`` (see ``epoch_sampler``): the transforms draw from the
    global torch RNG, seeded per item inside ``fork_rng`` so that the caller's RNG is left as it was.
    """

    def __init__(self, base, transform, num_views: int):
        self.base, self.transform, self.num_views = base, transform, num_views

    def __len__(self):
        return len(self.base)

    def __getitem__(self, key):
        view_seed, i = key
        try:
            img, label = self.base[i]
        except UnreadableImage as err:
            return str(err.path)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(view_seed)
            views = tuple(self.transform(img) for _ in range(self.num_views))
        return views, label, i


def _collate(batch):
    skipped = [b for b in batch if isinstance(b, str)]
    good = [b for b in batch if not isinstance(b, str)]
    if not good:
        return {"views": None, "labels": torch.zeros(0, dtype=torch.long), "index": torch.zeros(0, dtype=torch.long),
                "skipped": skipped}
    # Unreadable images are replaced by repeats of readable ones of the same batch, so every step has
    # the same batch size: BN sees the batch size it was configured for, DDP ranks stay in step, and
    # torch's CPU channels_last backward (2.14) crashes when the batch size changes between steps.
    good = [good[i % len(good)] for i in range(len(batch))]
    views = tuple(torch.stack([g[0][v] for g in good]) for v in range(len(good[0][0])))
    return {"views": views, "labels": torch.tensor([g[1] for g in good]), "index": torch.tensor([g[2] for g in good]),
            "skipped": skipped}


def default_workers() -> int:
    """DataLoader workers when ``data.num_workers`` is not given: every core this process may use
    but one, which the main process keeps (for the model on CPU, for launching kernels on a GPU),
    and at most 8 (beyond that, per-worker memory grows faster than throughput). One core: 0, the
    transforms then run in the main process. Pinned memory is chosen by the device (CUDA only), and
    workers persist across epochs whenever there are any (see ``PerImageViewLoader``)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(0, min(8, cores - 1))


class PerImageViewLoader:
    def __init__(self, dataset, cfg: Config, num_views: int, device: torch.device):
        size = cfg.data.image_size or dataset.image_size or 224
        transform = build_view_transform(cfg.aug, size, dataset.channels, dataset.mean, dataset.std)
        self.dataset = _MultiView(dataset, transform, num_views)
        self.global_batch = cfg.optim.batch_size
        self.batch = local_batch_size(self.global_batch)
        self.seed = cfg.run.seed
        self.device = device
        workers = cfg.data.num_workers if cfg.data.num_workers >= 0 else default_workers()
        self.workers = workers
        self.pin = device.type == "cuda"
        if len(dataset) < self.global_batch:
            raise ValueError(f"the dataset has {len(dataset)} training images, fewer than one batch "
                             f"(optim.batch_size={self.global_batch}); lower the batch size")
        # One DataLoader for the run: its workers persist across epochs (no restart each epoch).
        # Determinism does not rest on them: the sampler hands every image its view seed.
        self.sampler = EpochSampler(len(dataset), self.global_batch, dist.rank(), dist.world_size(), self.seed)
        self.loader = DataLoader(self.dataset, batch_size=self.batch, sampler=self.sampler, num_workers=workers,
                                 collate_fn=_collate, pin_memory=self.pin, drop_last=True,
                                 persistent_workers=workers > 0,
                                 # its own generator: the DataLoader's draws leave the global RNG alone
                                 generator=torch.Generator().manual_seed(self.seed))

    def __len__(self) -> int:
        return len(self.dataset) // self.global_batch

    def describe(self) -> str:
        return f"per-image pipeline, {self.workers} worker(s)"

    def epoch(self, epoch: int, start_batch: int = 0) -> Iterator[dict]:
        # the same on every rank: one shared permutation
        self.sampler.set_epoch(epoch_seed(self.seed, epoch), start_batch)
        yield from _delivered(self.loader, self.device)


def _delivered(loader: DataLoader, device: torch.device) -> Iterator[dict]:
    """The DataLoader's batches with their views on ``device``; under torchrun a step that any rank
    cannot use is left out by all."""
    for batch in loader:
        if dist.is_enabled() and unusable_anywhere(batch["views"] is None):
            batch["views"] = None  # every rank leaves this step out, or the others would wait in DDP for ever
        if batch["views"] is not None:
            batch["views"] = tuple(v.to(device, non_blocking=True) for v in batch["views"])
        yield batch


class ShardViewLoader:
    """WebDataset shards streamed, each rank and DataLoader worker reading its own images
    (``shard_stream.py``; on a CPU the batched pipeline reads in the main process:
    :func:`shard_workers`). ``pipeline="batched"``: the reading only hands on each batch's bytes;
    the main process decodes them in one call on the training device into the decoded cache's
    stored form (shorter side at ``data.cache_side`` or the image size, whole up to
    4:3; ``encoded_decode.py``, as :class:`EncodedBatchLoader`) and makes the views with
    ``BatchAugment``, drawn from one generator per (seed, epoch, rank) as :class:`BatchedViewLoader`
    draws them. The batched decode costs the main process less than PIL's one image at a time cost
    the workers, on the same cores (docs/PERFORMANCE.md).
    ``"per_image"``: the workers run the per-image transforms (the reference)."""

    def __init__(self, dataset: ShardedImages, cfg: Config, num_views: int, device: torch.device,
                 pipeline: str = "batched"):
        self.global_batch = cfg.optim.batch_size
        self.batch = local_batch_size(self.global_batch)
        self.num_views = num_views
        self.seed = cfg.run.seed
        self.device = device
        self.shards = len(dataset.shard_paths)
        self.workers = cfg.data.num_workers if cfg.data.num_workers >= 0 else shard_workers(pipeline, device)
        if len(dataset) < self.global_batch:
            raise ValueError(f"the dataset has {len(dataset)} training images, fewer than one batch "
                             f"(optim.batch_size={self.global_batch}); lower the batch size")
        self.augment = None
        self.why_per_image = ""  # set where data.pipeline=auto could not take the batched pipeline
        if pipeline == "batched":
            self.side = cfg.data.cache_side or cfg.data.image_size or 224
            self.channels = dataset.channels
            self.augment = BatchAugment(cfg.aug, cfg.data.image_size or self.side, dataset.channels, dataset.mean,
                                        dataset.std, kernel=cfg.data.augment_kernel)
            self.augment.uses_native(device)  # data.augment_kernel=native where it cannot be built: fail now
            prepare, collate = EncodedBytes(), collate_encoded
        else:
            transform = build_view_transform(cfg.aug, cfg.data.image_size or 224, dataset.channels, dataset.mean,
                                             dataset.std)
            prepare, collate = PerImageViews(transform, num_views, dataset.channels), _collate
        self.stream = ShardStream(dataset, prepare, self.batch, self.global_batch, dist.rank(), dist.world_size())
        # Workers start anew each epoch (not persistent): each takes the epoch's plan with it.
        self.loader = DataLoader(self.stream, batch_size=None, num_workers=self.workers, collate_fn=collate,
                                 pin_memory=device.type == "cuda",
                                 generator=torch.Generator().manual_seed(self.seed))

    def __len__(self) -> int:
        return self.stream.steps()

    def describe(self) -> str:
        if self.augment is None:
            why = f" ({self.why_per_image})" if self.why_per_image else ""
            return f"per-image pipeline streaming {self.shards} shard(s), {self.workers} worker(s){why}"
        where = f"by {self.workers} worker(s)" if self.workers else "in the main process"
        return (f"batched pipeline streaming {self.shards} shard(s) read {where} {shard_reader()}, JPEGs "
                f"decoded in batches by torchvision on {self.device.type} at {self.side}px, "
                f"{self.augment.describe(self.device)}")

    def epoch(self, epoch: int, start_batch: int = 0) -> Iterator[dict]:
        self.stream.set_epoch(epoch_seed(self.seed, epoch), start_batch)
        if self.augment is None:
            yield from _delivered(self.loader, self.device)
            return
        gen = torch.Generator(device=self.device).manual_seed(epoch_seed(self.seed, epoch, 1 + dist.rank()))
        self._pass_over(gen, start_batch)
        for batch in self.loader:
            slots, unreadable = decode_into_slots(batch.pop("blobs"), batch.pop("names"), self.channels, self.side,
                                                  self.device, size=self.batch)
            batch["skipped"] += unreadable
            unusable = slots is None
            if dist.is_enabled() and unusable_anywhere(unusable):
                unusable = True  # every rank leaves this step out, or the others would wait in DDP for ever
            if unusable:
                self._pass_over(gen, 1)  # a step left out draws as a trained one: later views stay the same
                yield {**batch, "views": None}
                continue
            # What was left out (in the worker or here) is replaced by repeats of readable images: the
            # step keeps its configured batch size, as ``_collate`` explains.
            images, sizes, fill = slots
            keep = torch.tensor(fill, dtype=torch.long)
            yield {**batch, "labels": batch["labels"][keep], "index": batch["index"][keep],
                   "views": tuple(self.augment(images, gen, sizes) for _ in range(self.num_views))}

    def _pass_over(self, gen: torch.Generator, batches: int) -> None:
        """Advance ``gen`` past ``batches`` batches' views without making them: how many numbers a view
        takes depends only on the batch's size (as ``BatchedViewLoader`` skips batches on resume)."""
        sizes = torch.full((self.batch, 2), self.side, dtype=torch.int64)
        for _ in range(batches * self.num_views):
            self.augment.sample_params(self.batch, gen, self.device, image_sizes=sizes)


def shard_workers(pipeline: str, device: torch.device) -> int:
    """DataLoader workers for shards when ``data.num_workers`` is not given. The batched pipeline on
    a CPU reads in the main process (0): what a worker has left to do there, reading the tar through
    its index, is about 1 ms a batch, while a worker process running beside a step that has every
    core makes the step's threads wait for the one that lost its core -- on 2 cores, Tiny-ImageNet
    epochs read in the main process made a median 89.9% of the cache's images/s, read by one worker
    87.2% (docs/PERFORMANCE.md). Elsewhere (a GPU step, per-image transforms) the workers of
    :func:`default_workers`."""
    return 0 if pipeline == "batched" and device.type == "cpu" else default_workers()


def _shard_pipeline(pipeline: str) -> str:
    """``batched`` where torchvision decodes JPEGs here (its decoders are deprecated: they may be gone),
    else ``per_image`` for ``auto``; ``data.pipeline=batched`` without the decoder is refused."""
    if pipeline == "per_image":
        return pipeline
    why = decoder_unavailable()
    if why is None:
        return "batched"
    if pipeline == "batched":
        raise ValueError(f"data.pipeline=batched on shards needs torchvision's JPEG decoder, which fails here "
                         f"({why}); use data.pipeline=per_image (or auto)")
    return "per_image"


def build_train_loader(dataset, cfg: Config, num_views: int, device: torch.device):
    """The batched pipeline where the data fit in one tensor or stream from shards (the default), the
    encoded one on a folder's store of bytes, else per image."""
    pipeline = cfg.data.pipeline
    if isinstance(dataset, ShardedImages):
        if pipeline == "encoded":
            raise ValueError("data.pipeline=encoded needs an image folder; shards take the batched pipeline, which "
                             "decodes as the encoded one does -- use data.pipeline=auto (batched) or per_image")
        loader = ShardViewLoader(dataset, cfg, num_views, device, _shard_pipeline(pipeline))
        if pipeline == "auto" and loader.augment is None:  # said in the run's first lines
            loader.why_per_image = f"torchvision cannot decode JPEGs here ({decoder_unavailable()})"
        return loader
    if isinstance(dataset, EncodedImages):  # data.pipeline=encoded, or auto on a folder over the cache's bound
        return EncodedBatchLoader(dataset, cfg, num_views, device)
    if pipeline == "encoded":
        raise ValueError(f"data.pipeline=encoded needs an image folder (imagefolder, folder, tinyimagenet); "
                         f"{cfg.data.dataset!r} is not one -- use data.pipeline=auto")
    if pipeline == "auto":
        pipeline = "batched" if isinstance(dataset, InMemoryImages) else "per_image"
    if pipeline == "batched":
        if not isinstance(dataset, InMemoryImages):
            raise ValueError(f"data.pipeline=batched needs an in-memory dataset; {cfg.data.dataset!r} is read "
                             "from files -- use data.pipeline=per_image (or auto)")
        return BatchedViewLoader(dataset, cfg, num_views, device)
    return PerImageViewLoader(dataset, cfg, num_views, device)
