"""The first N images of a dataset, as a dataset of the same kind (for quick runs)."""
from __future__ import annotations

import copy

from .memory import InMemoryImages


def subset(dataset, limit: int):
    """``dataset`` itself when ``limit`` is 0 or not smaller than it; else a shallow copy cut to ``limit``."""
    if limit <= 0 or limit >= len(dataset):
        return dataset
    small = copy.copy(dataset)
    if isinstance(dataset, InMemoryImages):  # in memory: slice the tensors (views, no copy)
        small.images = dataset.images[:limit]
        small.labels = dataset.labels[:limit]
    else:
        small.paths = list(dataset.paths[:limit])
        small.labels = list(dataset.labels[:limit])
    return small
