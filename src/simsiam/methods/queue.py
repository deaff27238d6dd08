"""A first-in first-out ring of feature vectors: MoCo's dictionary of negative keys, SwAV's memory
of past embeddings for small batches.

Everything is a buffer: it is saved in checkpoints (resume keeps the queue) and never gets a
gradient. ``length`` may be lowered after construction (:meth:`clip`) without changing the buffer's
shape, so a checkpoint still loads into a model freshly built from the same config.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class FeatureQueue(nn.Module):
    def __init__(self, size: int, dim: int):
        super().__init__()
        if size < 1:
            raise ValueError(f"a queue needs at least one slot, got size {size}")
        # MoCo starts from random unit vectors: the first steps contrast against noise, not zeros.
        self.register_buffer("features", F.normalize(torch.randn(size, dim), dim=1))  # (size, dim)
        self.register_buffer("ptr", torch.zeros((), dtype=torch.long))  # next slot to overwrite
        self.register_buffer("length", torch.tensor(size, dtype=torch.long))  # slots in use (<= size)
        self.register_buffer("count", torch.zeros((), dtype=torch.long))  # vectors stored so far

    def active(self) -> torch.Tensor:
        """The ``length`` stored vectors ``(length, dim)``, in slot order (not age order)."""
        return self.features[: int(self.length)]

    def is_full(self) -> bool:
        """True once every active slot holds an enqueued vector (not the initial noise)."""
        return int(self.count) >= int(self.length)

    @torch.no_grad()
    def enqueue(self, x: torch.Tensor) -> None:
        """Overwrite the oldest slots with ``x`` ``(n, dim)``; only the newest ``length`` are kept
        when n exceeds it. Wraps around, so ``length`` need not divide by n."""
        length = int(self.length)
        x = x.detach()[-length:].to(self.features.dtype)
        n = x.shape[0]
        slots = (int(self.ptr) + torch.arange(n, device=x.device)) % length
        self.features[slots] = x
        self.ptr.fill_((int(self.ptr) + n) % length)
        self.count.add_(n)

    @torch.no_grad()
    def clip(self, length: int) -> None:
        """Use only the first ``length`` slots from now on."""
        if not 1 <= length <= self.features.shape[0]:
            raise ValueError(f"queue length must be in [1, {self.features.shape[0]}], got {length}")
        self.length.fill_(length)
        self.ptr.fill_(int(self.ptr) % length)
