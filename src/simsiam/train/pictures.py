"""The pictures a run gives its image loggers (TensorBoard): one batch's augmented views at the start,
so that a user checks the augmentation by eye, and the embedding projector of the kNN test set at
the end.
"""
from __future__ import annotations

import torch
from torchvision.utils import make_grid

from ..artifacts import checkpoint as ckpt_io
from ..artifacts.runlog import RunLog
from ..data.memory import InMemoryImages
from ..data.subset import subset
from ..eval.features import eval_mode, extract_features

VIEW_IMAGES = 16  # source images shown, one row of views each
PROJECTOR_LIMIT = 1000  # kNN test images in the projector: enough to see clusters, small to load


def log_augmented_views(log: RunLog, loader, train_set, epoch: int) -> None:
    """The first batch of ``epoch`` as the step sees it: row i holds the views of image i.

    Drawing it must not change training: the loaders seed their own generators from the epoch,
    and every global RNG is put back as it was (a DataLoader draws its workers' seeds from them)."""
    if not log.loggers:
        return
    state = ckpt_io.rng_state()
    try:
        batch = next((b for b in loader.epoch(epoch) if b["views"] is not None), None)
    finally:
        ckpt_io.set_rng_state(state)
    if batch is None:
        return
    views = [v[:VIEW_IMAGES].detach().float().cpu() for v in batch["views"]]
    mean = torch.tensor(train_set.mean).view(1, -1, 1, 1)
    std = torch.tensor(train_set.std).view(1, -1, 1, 1)
    rows = torch.stack([v * std + mean for v in views], dim=1).flatten(0, 1)  # (n * views, C, H, W)
    log.images("augmented_views", make_grid(rows, nrow=len(views), padding=1, pad_value=1.0))


@torch.no_grad()
def log_embedding_projector(log: RunLog, backbone: torch.nn.Module, eval_set, *, device: torch.device,
                            image_size: int, step: int) -> None:
    """Pooled features of the first ``PROJECTOR_LIMIT`` kNN test images, their labels and (for
    in-memory datasets) thumbnails. Every rank calls this (feature extraction is collective)."""
    images = subset(eval_set, PROJECTOR_LIMIT)
    with eval_mode(backbone):
        feats, labels, kept, _ = extract_features(backbone, images, device=device, image_size=image_size)
    thumbnails = None
    if isinstance(images, InMemoryImages):
        thumbnails = images.square_images(torch.tensor(kept, dtype=torch.long)).float() / 255
    log.embedding(feats.float(), [int(y) for y in labels], thumbnails, step)
