"""Feature extraction: un-augmented images through a network in eval mode, batched.

In-memory datasets are normalised as whole uint8 batches; file datasets go through a DataLoader
with the centre-crop eval transform, and unreadable files are skipped and listed. Under torchrun
each rank embeds its own shard and the results are gathered, so every rank returns all features,
in dataset order.
"""
from __future__ import annotations

from typing import Callable, Optional

import torch
from torch import nn
from torch.utils.data import DataLoader, Subset

from ..augment import build_eval_transform, normalize_batch
from ..data import InMemoryImages, UnreadableImage
from ..parallel import distributed as dist


class TransformedImages(torch.utils.data.Dataset):
    """(transformed image tensor, label, index) of one image of ``base``; the file's path (a str)
    instead when it cannot be decoded, for the collate function to skip and report. Shared by the
    feature extraction here and linear evaluation's per-image views."""

    def __init__(self, base, transform):
        self.base, self.transform = base, transform

    def __len__(self):
        return len(self.base)

    def __getitem__(self, i):
        try:
            img, label = self.base[i]
        except UnreadableImage as err:
            return str(err.path)
        return self.transform(img), label, i


def _collate(batch):
    skipped = [b for b in batch if isinstance(b, str)]
    good = [b for b in batch if not isinstance(b, str)]
    if not good:
        return None, None, None, skipped
    x = torch.stack([g[0] for g in good])
    return x, torch.tensor([g[1] for g in good]), torch.tensor([g[2] for g in good]), skipped


@torch.no_grad()
def extract_features(net: Callable[[torch.Tensor], torch.Tensor], dataset, *, device: torch.device,
                     batch_size: int = 512, image_size: int = 0, num_workers: int = 0,
                     channels_last: bool = False, progress: Optional[Callable] = None, margin: bool = True
                     ) -> tuple[torch.Tensor, torch.Tensor, list[int], list[str]]:
    """Run ``net`` (e.g. a backbone) over every image of ``dataset``.

    Files are resized with the ImageNet margin, or without it (``margin=False``: see
    :func:`~simsiam.augment.build_eval_transform`). Returns ``(features (N, F) on CPU, labels (N,),
    indices of the images kept, unreadable paths)``.
    The caller puts ``net`` in eval mode (see :func:`eval_mode`), so BN uses running statistics.
    """
    shard = list(range(dist.rank(), len(dataset), dist.world_size()))
    out = _Rows(len(shard))
    labels, kept, skipped = [], [], []
    if isinstance(dataset, InMemoryImages):
        # Tensor path: no PIL round trip; native size unless a different eval size is asked for.
        idx = torch.tensor(shard, dtype=torch.long)
        for start in range(0, len(idx), batch_size):
            b = idx[start:start + batch_size]
            x = normalize_batch(dataset.square_images(b).to(device, non_blocking=True), dataset.mean, dataset.std)
            if image_size and image_size != x.shape[-1]:
                x = nn.functional.interpolate(x, size=(image_size, image_size), mode="bilinear",
                                              align_corners=False, antialias=True)
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            out.add(net(x).float().cpu())
            labels.append(dataset.labels[b])
            kept.append(b)
            if progress:
                progress(len(b))
    else:
        size = image_size or 224
        transform = build_eval_transform(size, dataset.channels, dataset.mean, dataset.std, resize=True, margin=margin)
        loader = DataLoader(Subset(TransformedImages(dataset, transform), shard), batch_size=batch_size,
                            num_workers=num_workers, collate_fn=_collate)
        for x, y, i, bad in loader:
            skipped += bad
            if x is None:
                continue
            x = x.to(device, non_blocking=True)
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            out.add(net(x).float().cpu())
            labels.append(y)
            kept.append(i)
            if progress:
                progress(len(y) + len(bad))
    f = out.rows(getattr(net, "num_features", 0))
    y = torch.cat(labels).long() if labels else torch.zeros(0, dtype=torch.long)
    k = torch.cat(kept).long() if kept else torch.zeros(0, dtype=torch.long)
    if dist.is_enabled():
        f, y, k = (dist.all_gather_cat(t.to(device)).cpu() for t in (f, y, k))
        skipped = dist.all_gather_objects(skipped)
        order = k.argsort()  # back to dataset order, as one process returns them
        f, y, k = f[order], y[order], k[order]
    return f, y, k.tolist(), skipped


class _Rows:
    """Feature rows written into one tensor allocated at the first batch, not a list concatenated at
    the end: for pixel features (12,288 a 64-px colour image) of 100,000 images the list and its
    concatenation would hold two 5 GB copies at once."""

    def __init__(self, capacity: int):
        self.capacity, self.filled, self.buffer = capacity, 0, None

    def add(self, z: torch.Tensor) -> None:
        if self.buffer is None:
            self.buffer = torch.empty(self.capacity, *z.shape[1:], dtype=z.dtype)
        self.buffer[self.filled:self.filled + len(z)] = z
        self.filled += len(z)

    def rows(self, dim: int) -> torch.Tensor:
        """The rows written (fewer than the capacity when unreadable images were skipped)."""
        return torch.zeros(0, dim) if self.buffer is None else self.buffer[:self.filled]


class eval_mode:
    """Context manager: the module in eval mode inside, its previous mode restored after."""

    def __init__(self, module: nn.Module):
        self.module = module

    def __enter__(self):
        self.was_training = self.module.training
        self.module.eval()
        return self.module

    def __exit__(self, *exc):
        self.module.train(self.was_training)
