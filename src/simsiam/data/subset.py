"""``data.train_limit`` / ``data.eval_limit``: a seeded random subset, class-stratified when labelled.

The first N files of a class-sorted folder would be the first few classes only, and a kNN
accuracy on them would mean nothing; a stratified subset keeps every class at its share. The
seed is fixed (``SUBSET_SEED``), so that a run, its evaluation and its baselines all see the same
images for the same limit.
"""
from __future__ import annotations

import copy
from typing import Sequence

import torch

from .memory import InMemoryImages

SUBSET_SEED = 0


def subset_indices(labels: Sequence[int], limit: int, seed: int = SUBSET_SEED) -> torch.Tensor:
    """``limit`` indices, sorted, drawn at random with ``seed``: each label (-1, unlabelled, is one
    more stratum) gets its share of ``limit``, rounded by largest remainder."""
    labels = torch.as_tensor(list(labels) if not torch.is_tensor(labels) else labels, dtype=torch.int64)
    gen = torch.Generator().manual_seed(seed)
    classes, counts = torch.unique(labels, return_counts=True)
    exact = counts.double() * limit / labels.numel()
    quota = exact.floor().long()
    short = limit - int(quota.sum())
    if short:  # the largest remainders get one more; ties go to the larger class, then the lower label
        order = sorted(range(len(classes)), key=lambda i: (-(exact[i] - quota[i]).item(), -counts[i].item(), i))
        for i in order[:short]:
            quota[i] += 1
    chosen = []
    for cls, take in zip(classes.tolist(), quota.tolist()):
        members = torch.nonzero(labels == cls).flatten()
        chosen.append(members[torch.randperm(members.numel(), generator=gen)[:take]])
    return torch.cat(chosen).sort().values


def subset(dataset, limit: int, seed: int = SUBSET_SEED):
    """``dataset`` itself when ``limit`` is 0 or not smaller than it; else a shallow copy holding the
    subset of :func:`subset_indices` (``subset_of`` records its size before and the seed)."""
    if limit <= 0 or limit >= len(dataset):
        return dataset
    small = select(dataset, subset_indices(dataset.labels, limit, seed))
    small.subset_of = {"images": len(dataset), "seed": seed}
    return small


def select(dataset, index: torch.Tensor):
    """A shallow copy of ``dataset`` holding the images at ``index`` (in-memory or files), in that order."""
    small = copy.copy(dataset)
    if isinstance(dataset, InMemoryImages):
        small.images = dataset.images[index]
        small.sizes = None if dataset.sizes is None else dataset.sizes[index]
        small.labels = dataset.labels[index]
    else:
        small.paths = [dataset.paths[i] for i in index.tolist()]
        small.labels = [dataset.labels[i] for i in index.tolist()]
    return small


def describe(dataset) -> str:
    """How many images, and of what: ``"1000 images (a class-stratified random subset of 60000, seed 0)"``."""
    of = dataset.subset_of
    if of is None:
        return f"{len(dataset)} images"
    return f"{len(dataset)} images (a class-stratified random subset of {of['images']}, seed {of['seed']})"
