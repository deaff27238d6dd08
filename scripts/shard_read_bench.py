"""What reading WebDataset shards costs, apart from training: the tar reader's time per sample, and
the main process's time per batch (reading, decoding, augmenting) from the decoded cache and from
shards read in the main process or in one DataLoader worker, with a pause standing for the step.

    PYTHONPATH=src python scripts/shard_read_bench.py --folder SUBSET --shards SHARDS [--threads 2]

FOLDER is an image folder (class sub-folders) and SHARDS its ``simsiam pack`` output; the preset is
``tinyimagenet``. docs/PERFORMANCE.md quotes it ("Reading through the tar's index").
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

from simsiam import get_preset
from simsiam.data import load_dataset
from simsiam.data.cache import decoded_if_configured
from simsiam.data.loaders import build_train_loader
from simsiam.data.shards import read_shard, webdataset
from simsiam.resolve import resolve


def per_sample_us(samples) -> float:
    start, n = time.perf_counter(), 0
    for _ in samples:
        n += 1
    return (time.perf_counter() - start) / max(n, 1) * 1e6


def main_process_ms(loader, batches: int, step_seconds: float) -> float:
    """Median time the main process spends getting a batch, after the first 10."""
    times, it = [], iter(loader.epoch(0))
    for _ in range(batches):
        start = time.perf_counter()
        next(it)
        times.append(time.perf_counter() - start)
        time.sleep(step_seconds)  # the step: a worker reads meanwhile
    return statistics.median(times[10:]) * 1e3


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--folder", required=True)
    p.add_argument("--shards", required=True)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batches", type=int, default=60)
    p.add_argument("--step-ms", type=float, default=100.0, help="the pause standing for the training step")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    wds = webdataset()
    shard = str(sorted(Path(args.shards).glob("shard-*.tar"))[0])
    streamed = min(per_sample_us(wds.tarfile_samples([{"url": shard}])) for _ in range(3))
    indexed = min(per_sample_us(read_shard(shard, lambda exn: True)) for _ in range(3))
    print(f"{shard}: webdataset's streaming reader {streamed:.1f} us a sample, "
          f"the tar index (wids) {indexed:.1f} us (best of 3)")
    device = torch.device("cpu")
    for name, dataset, folder, workers in (("cache", "imagefolder", args.folder, 0),
                                           ("shards, main process", "shards", args.shards, 0),
                                           ("shards, one worker", "shards", args.shards, 1)):
        cfg = get_preset("tinyimagenet")
        cfg.data.dataset, cfg.data.data_dir, cfg.data.eval_split, cfg.data.num_workers = dataset, folder, "", workers
        cfg = resolve(cfg)
        data = load_dataset(dataset, "train", folder)
        if dataset != "shards":
            data = decoded_if_configured(data, cfg.data)
        loader = build_train_loader(data, cfg, 2, device)
        ms = main_process_ms(loader, args.batches, args.step_ms / 1e3)
        print(f"{name}: {ms:.1f} ms of the main process a batch (median; {args.threads} threads)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
