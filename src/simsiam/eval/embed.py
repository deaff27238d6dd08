"""Embeddings of every image of a folder, for search, clustering or a downstream model.

Images are found recursively (the ``folder`` dataset), converted to the checkpoint's channel
count, resized and centre-cropped to its training size, normalised with its training statistics
and embedded in batches: pooled backbone features, or the projector output. Unreadable files are
skipped and listed, never fatal.

Outputs in the chosen directory: ``embeddings.npy`` (float32, N x D), ``index.csv`` (row, path: row
i of the array is that file) and ``unreadable.txt`` (one path per line; empty when none). They are
written together, all or nothing (``artifacts/together.py``): an error or Ctrl-C leaves the
directory as it was. A file name that is not UTF-8 is written as its bytes (``data/names.py``).
"""
from __future__ import annotations

import csv
import io
import sys
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from ..artifacts.together import write_together
from ..data import ImageFiles, load_dataset
from ..data.names import text_bytes
from ..models import input_channels
from .features import eval_mode, extract_features
from .normalisation import training_normalisation
from .pretrained import load_pretrained


def folder_images(data_dir: str | Path, channels: int, mean, std) -> ImageFiles:
    """Every image under ``data_dir`` (recursive, sorted), decoded as ``channels``-channel images."""
    found = load_dataset("folder", "train", str(data_dir))
    return ImageFiles(found.paths, found.labels, "folder", 0, channels=channels, mean=mean, std=std)


def embed_images(model, cfg, images: ImageFiles, *, projector: bool = False, image_size: int = 0,
                 batch_size: int = 256, device: str | torch.device = "cpu", progress: bool = True,
                 num_workers: int = 0) -> tuple[torch.Tensor, list[int], list[str], int]:
    """``(features (N, D), indices of the images embedded, unreadable paths, input size)`` of ``images``
    with a loaded model: pooled backbone features, or with ``projector`` its output z."""
    size = image_size or cfg.data.image_size or 224
    net = model.encode if projector else model.backbone
    # closed on an interrupt too: a bar left open redraws itself at exit, below the command's last line
    with tqdm(total=len(images), unit="img", desc="embedding", disable=not progress, file=sys.stderr) as bar, \
            eval_mode(model):
        feats, _, kept, unreadable = extract_features(net, images, device=torch.device(device), batch_size=batch_size,
                                                      image_size=size, num_workers=num_workers, progress=bar.update)
    if feats.shape[0] == 0:  # nothing readable: still an (0, D) array, so readers need no special case
        feats = torch.zeros(0, cfg.model.dim if projector else model.backbone.num_features)
    return feats, kept, unreadable, size


def embed_folder(checkpoint: str | Path, data_dir: str | Path, out_dir: str | Path, *, projector: bool = False,
                 image_size: int = 0, batch_size: int = 256, device: str = "cpu", progress: bool = True,
                 num_workers: int = 0) -> dict:
    """Embed every image under ``data_dir`` with the checkpoint; write the outputs to ``out_dir``.

    ``image_size`` 0 means the checkpoint's training size (e.g. 28 for Fashion-MNIST; 224 when
    it trained at native size on files). Returns a summary: counts, dimension, paths written.
    """
    t_start = time.perf_counter()
    dev = torch.device(device)
    model, cfg = load_pretrained(checkpoint, dev)
    channels = input_channels(model.backbone)
    mean, std = training_normalisation(cfg, channels)
    images = folder_images(data_dir, channels, mean, std)
    feats, kept, unreadable, size = embed_images(model, cfg, images, projector=projector, image_size=image_size,
                                                 batch_size=batch_size, device=dev, progress=progress,
                                                 num_workers=num_workers)

    out = Path(out_dir)
    array = feats.numpy().astype(np.float32, copy=False)
    index = io.StringIO()
    writer = csv.writer(index)
    writer.writerow(["row", "path"])
    writer.writerows((row, images.paths[i]) for row, i in enumerate(kept))
    write_together({out / "embeddings.npy": lambda fh: np.save(fh, array),
                    out / "unreadable.txt": lambda fh: fh.write(text_bytes("".join(f"{p}\n" for p in unreadable))),
                    out / "index.csv": lambda fh: fh.write(text_bytes(index.getvalue()))})  # last: says the rest is there
    for path in unreadable:
        print(f"warning: skipped unreadable image {path}", file=sys.stderr)
    return {
        "images": len(images),
        "embedded": int(array.shape[0]),
        "dim": int(array.shape[1]),
        "unreadable": list(unreadable),
        "what": "projector output" if projector else "pooled backbone features",
        "image_size": size,
        "channels": channels,
        "out_dir": str(out),
        "time_s": round(time.perf_counter() - t_start, 2),
    }
