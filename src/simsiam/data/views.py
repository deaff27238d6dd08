"""The two-view training wrapper and its collate function."""

from __future__ import annotations

from typing import Callable, Optional

import torch
from torch.utils.data import Dataset

from .errors import UnreadableImage


class TwoViewDataset(Dataset):
    """Wrap a dataset so each item is two independently augmented views of one image.

    ``__getitem__(i)`` returns ``(transform(img), transform(img), label)``. When
    the base dataset raises ``UnreadableImage`` it returns the offending path
    (a ``str``) instead, so one bad file does not kill a long run;
    ``collate_views`` drops and reports such markers.
    """

    def __init__(self, base: Dataset, transform: Callable):
        self.base = base
        self.transform = transform

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int):
        try:
            img, label = self.base[index]
        except UnreadableImage as exc:
            return exc.path
        # Two separate calls: each draws its own random crop, flip, jitter, ...
        return self.transform(img), self.transform(img), label


def collate_views(batch: list) -> dict:
    """Collate ``TwoViewDataset`` items into a batch dict, dropping unreadable images.

    Returns ``{"views": (Tensor (B,C,H,W), Tensor (B,C,H,W)) or None,
    "labels": int64 Tensor (B,), "skipped": list of unreadable paths}``.
    ``views`` is ``None`` (and ``labels`` empty) when every item was skipped;
    callers should skip such a batch. The transform must return tensors of one
    shape. Module-level, so it pickles into DataLoader worker processes.
    """
    skipped = [item for item in batch if isinstance(item, str)]
    items = [item for item in batch if not isinstance(item, str)]
    views: Optional[tuple[torch.Tensor, torch.Tensor]] = None
    if items:
        views = (torch.stack([v1 for v1, _, _ in items]), torch.stack([v2 for _, v2, _ in items]))
    labels = torch.tensor([int(label) for _, _, label in items], dtype=torch.int64)
    return {"views": views, "labels": labels, "skipped": skipped}
