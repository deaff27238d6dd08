"""The finite-gradient check's share of a training step, per preset (train/finite_guard.py).

    PYTHONPATH=src python scripts/finite_check_cost.py [--presets fmnist tinyimagenet] [--steps 8]

Builds each preset's step as ``simsiam bench`` does (``perf/bench.py``'s ``Trainer``, synthetic
views of the preset's shape), then alternates a step and the check alone on the gradients the step
left: the medians of both and their ratio. ``simsiam bench`` prints the same share for one preset.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from simsiam import get_preset
from simsiam.perf.bench import Trainer
from simsiam.resolve import resolve
from simsiam.train.finite_guard import gradients_finite

SHAPES = {"fmnist": (1, 28), "tinyimagenet": (3, 64), "digits": (1, 8), "cifar10": (3, 32)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--presets", nargs="+", default=["fmnist", "tinyimagenet"], choices=sorted(SHAPES))
    p.add_argument("--steps", type=int, default=8)
    args = p.parse_args(argv)
    for preset in args.presets:
        channels, size = SHAPES[preset]
        cfg = resolve(get_preset(preset))
        cfg.optim.epochs = cfg.optim.epochs or 10  # a budget preset: any schedule will do for timing
        trainer = Trainer(cfg, channels, torch.device("cpu"), print, 100)
        views = tuple(torch.randn(cfg.optim.batch_size, channels, size, size) for _ in range(2))
        for _ in range(3):
            trainer.step(views)
        step, check = [], []
        for _ in range(args.steps):
            start = time.perf_counter()
            trainer.step(views)
            step.append(time.perf_counter() - start)
            start = time.perf_counter()
            gradients_finite(trainer.train_step.parameters)
            check.append(time.perf_counter() - start)
        s, c = statistics.median(step), statistics.median(check)
        print(f"{preset} (run.amp={cfg.run.amp}, {torch.get_num_threads()} thread(s)): step {s * 1e3:.1f} ms, "
              f"check {c * 1e3:.2f} ms = {100 * c / s:.2f}% of the step")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
