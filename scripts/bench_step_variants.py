"""Training-step images/s of a preset under several (channels_last, bf16, threads) variants, interleaved.

The variants take turns step by step and each reports its median step, so load from other
processes hits all of them alike (docs/PERFORMANCE.md, the channels_last and bf16 figures):

    python scripts/bench_step_variants.py fmnist --batch-size 128 --rounds 8 \
        --variant 1,0,2 --variant 1,1,2 --variant 0,0,2 --variant 0,1,2

A variant is ``channels_last,bf16,threads`` (0/1, 0/1, an integer).
"""
from __future__ import annotations

import argparse
import copy
import os
import statistics
import time

import torch

from simsiam import get_preset
from simsiam.perf.bench import SYNTHETIC_SHAPES, Trainer
from simsiam.resolve import resolve


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("preset")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--rounds", type=int, default=8)
    p.add_argument("--variant", action="append", required=True, help="channels_last,bf16,threads e.g. 1,0,2")
    args = p.parse_args()
    cfg = resolve(get_preset(args.preset))
    batch = args.batch_size or cfg.optim.batch_size
    channels, size, _ = SYNTHETIC_SHAPES[cfg.data.dataset]
    size = cfg.data.image_size or size
    variants = [tuple(int(x) for x in v.split(",")) for v in args.variant]

    state = {}
    for v in variants:  # each variant is the training step of pretrain (train.step.TrainStep) on its settings
        c = copy.deepcopy(cfg)
        c.optim.batch_size = batch
        c.optim.epochs = c.optim.epochs or 1  # a budget preset: any length, the lr barely moves in 10**6 steps
        c.run.channels_last, c.run.amp, c.run.device = bool(v[0]), "bf16" if v[1] else "off", "cpu"
        trainer = Trainer(c, channels, torch.device("cpu"), print, steps_per_epoch=10**6)
        gen = torch.Generator().manual_seed(1)
        views = tuple(torch.randn(batch, channels, size, size, generator=gen) for _ in range(2))
        state[v] = (trainer, views, [])

    def step(v) -> None:
        trainer, views, times = state[v]
        torch.set_num_threads(v[2])
        start = time.perf_counter()
        trainer.step(views)
        times.append(time.perf_counter() - start)

    for r in range(args.rounds + 1):  # round 0 warms up (oneDNN picks and caches its kernels)
        for v in variants:
            step(v)
        if r == 0:
            for v in variants:
                state[v][2].clear()
    print(f"load average {os.getloadavg()}")
    for v in variants:
        times = state[v][2]
        print(f"{args.preset} batch {batch} channels_last={v[0]} bf16={v[1]} threads={v[2]}: "
              f"median {batch / statistics.median(times):.1f} images/s (best {batch / min(times):.1f}, n={len(times)})")


if __name__ == "__main__":
    main()
