"""Which images each rank sees in an epoch, in which order, and the random seed of each image's views.

The per-image pipeline keeps one DataLoader (and, with workers, the same worker processes) for the
whole run. Its randomness must nevertheless be a function of (seed, epoch) alone, or resuming at an
epoch boundary would not replay the batches an uninterrupted run saw. Worker RNGs cannot give that:
persistent workers carry their RNG state from one epoch to the next. So the sampler, which runs in
the main process, draws every image's view seed with the epoch's permutation and hands it to the
dataset together with the index; the dataset seeds the transforms with it (``loaders._MultiView``).

A side effect worth having: an image's views no longer depend on how many workers there are, nor on
which worker made them, nor (under torchrun) on the number of processes.
"""
from __future__ import annotations

from typing import Iterator

import torch
from torch.utils.data import Sampler

from ..parallel import distributed as dist


def epoch_seed(seed: int, epoch: int, rank: int = 0) -> int:
    """The seed of an epoch's permutation (``rank`` 0) and of each rank's view parameters (1 + rank)."""
    return (seed * 1_000_003 + epoch * 7_919 + rank * 104_729) % (2**63 - 1)


def local_batch_size(global_batch: int) -> int:
    world = dist.world_size()
    if global_batch % world:
        raise ValueError(f"optim.batch_size={global_batch} is the global batch and must divide by the "
                         f"number of processes ({world}); choose a multiple of {world}")
    return global_batch // world


def unusable_anywhere(unusable_here: bool) -> bool:
    """Under torchrun: whether any rank's batch has no readable image. One all-reduce of one number
    per step, for the pipelines that read files only: in-memory data have no unreadable images."""
    flag = torch.tensor([float(unusable_here)], device=dist.collective_device())
    return bool(dist.all_reduce_sum(flag).item())


def images_per_epoch(num_images: int, global_batch: int) -> int:
    """The images an epoch trains on: whole global batches only (the incomplete last one is dropped,
    here and in ``loaders.BatchedViewLoader``), so the budget counts what is trained."""
    return (num_images // global_batch) * global_batch


class EpochSampler(Sampler):
    """Yields ``(view_seed, index)`` for this rank's share of every full global batch of an epoch.

    All ranks draw the same permutation and seeds; rank ``r`` takes positions ``[r*b, (r+1)*b)`` of
    each global batch of ``world*b`` images, as :class:`~simsiam.loaders.BatchedViewLoader` does.
    The incomplete last global batch is dropped (the paper's loader drops it too).
    Call :meth:`set_epoch` before iterating.
    """

    def __init__(self, num_images: int, global_batch: int, rank: int, world: int, seed: int):
        if global_batch % world:
            raise ValueError(f"global batch {global_batch} does not divide by {world} processes")
        self.num_images, self.global_batch = num_images, global_batch
        self.local_batch, self.rank, self.world = global_batch // world, rank, world
        self.seed, self.epoch_key, self.start_batch = seed, None, 0

    def set_epoch(self, epoch_key: int, start_batch: int = 0) -> None:
        """``epoch_key``: the epoch's seed (``loaders.epoch_seed(seed, epoch)``), the same on every rank;
        ``start_batch``: the global batches to leave out at the start (a run resumed mid-epoch)."""
        self.epoch_key, self.start_batch = epoch_key, start_batch

    def __len__(self) -> int:
        return images_per_epoch(self.num_images, self.global_batch) // self.world  # this rank's share

    def __iter__(self) -> Iterator[tuple[int, int]]:
        if self.epoch_key is None:
            raise RuntimeError("EpochSampler.set_epoch must be called before iterating")
        gen = torch.Generator().manual_seed(self.epoch_key)
        order = torch.randperm(self.num_images, generator=gen).tolist()
        # One seed per image and epoch; 2**62 keeps it a valid torch.manual_seed argument.
        seeds = torch.randint(0, 2**62, (self.num_images,), generator=gen).tolist()
        for b in range(self.start_batch, self.num_images // self.global_batch):
            start = b * self.global_batch + self.rank * self.local_batch
            for pos in range(start, start + self.local_batch):
                yield seeds[pos], order[pos]
