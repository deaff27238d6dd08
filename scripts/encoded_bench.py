"""Images/s of one epoch of views through each pipeline a folder can take, side by side on the same images:
the decoded cache (batched), the encoded-image store (bytes decoded in batches by torchvision), and
the per-image PIL pipeline in DataLoader workers. Views only, nothing trained: the pipeline's own cost.

    PYTHONPATH=src OMP_NUM_THREADS=1 python scripts/encoded_bench.py \\
        --data-dir /work/main/data/tiny-imagenet-200 --images 10000 --rounds 3

The ``tinyimagenet`` preset's views (64 px, its augmentation recipe and batch size), on a
class-stratified subset of the training photos. Each pipeline runs one untimed epoch first (the
files, store or cache then in the page cache for all three), then the rounds alternate the three,
and the medians are printed with each round's figures.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from simsiam import get_preset
from simsiam.data import load_dataset
from simsiam.data.cache import cached
from simsiam.data.encoded_loader import EncodedBatchLoader
from simsiam.data.encoded_store import stored
from simsiam.data.loaders import BatchedViewLoader, PerImageViewLoader
from simsiam.data.subset import subset


def one_epoch(loader, epoch: int) -> float:
    """Images/s of one epoch's views (both views of every batch made)."""
    started = time.perf_counter()
    images = 0
    for batch in loader.epoch(epoch):
        if batch["views"] is not None:
            images += batch["views"][0].shape[0]
    return images / (time.perf_counter() - started)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", required=True, help="the unpacked tiny-imagenet-200/")
    p.add_argument("--images", type=int, default=10000, help="training images (a stratified subset)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--work", type=Path, default=None, help="where the cache and the store go (default: a temporary folder)")
    opts = p.parse_args(argv)
    cfg = get_preset("tinyimagenet")
    cfg.data.data_dir = opts.data_dir
    device = torch.device("cpu")
    files = subset(load_dataset("tinyimagenet", "train", opts.data_dir), opts.images)
    with tempfile.TemporaryDirectory() as tmp:
        root = opts.work or Path(tmp)
        side = cfg.data.image_size
        loaders = {
            "decoded cache (batched)": BatchedViewLoader(cached(files, side, root, max_bytes=float("inf"), progress=False),
                                                         cfg, 2, device),
            "encoded store (torchvision)": EncodedBatchLoader(stored(files, root, progress=False), cfg, 2, device),
            "per-image (PIL, DataLoader workers)": PerImageViewLoader(files, cfg, 2, device),
        }
        print(f"{len(files)} Tiny-ImageNet training images at {side} px, batch {cfg.optim.batch_size}, "
              f"torch threads {torch.get_num_threads()}, per-image workers {loaders['per-image (PIL, DataLoader workers)'].workers}")
        for loader in loaders.values():
            one_epoch(loader, 0)  # warm: every source in the page cache, workers started
        figures = {name: [] for name in loaders}
        for r in range(opts.rounds):
            for name, loader in loaders.items():
                figures[name].append(one_epoch(loader, r + 1))
            print(f"round {r + 1}: " + ", ".join(f"{n} {v[-1]:.0f}" for n, v in figures.items()), flush=True)
        print("medians (images/s): " + ", ".join(f"{n} {statistics.median(v):.0f}" for n, v in figures.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
