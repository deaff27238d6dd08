"""Training-step throughput of each section-6 method at the fmnist CPU recipe, timed interleaved.

One process builds every method (SimSiam's ``fmnist`` preset and the ``fmnist_<method>`` presets)
and times full training steps (forward of both views, backward, SGD step, momentum/queue update)
on the same synthetic batch, one method after another in turn, for several rounds; the median
step time per method is reported as images/s (one image = its two views, as the trainer counts).
Interleaving makes a burst of load from other processes on a shared machine hit every method alike.

    python scripts/methods_speed.py [--rounds 7] [--threads 1] [--batch 256]
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from simsiam import get_preset
from simsiam.perf.bench import Trainer
from simsiam.resolve import resolve
from simsiam.train.resources import peak_memory

PRESETS = {"simsiam": "fmnist", "simclr": "fmnist_simclr", "moco": "fmnist_moco", "byol": "fmnist_byol",
           "swav": "fmnist_swav"}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--batch", type=int, default=0, help="the global batch (0: the fmnist preset's)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    runs = {}
    for name, preset in PRESETS.items():  # each the training step of pretrain (train.step.TrainStep)
        cfg = get_preset(preset)
        cfg.optim.batch_size = args.batch or cfg.optim.batch_size
        cfg.run.device = "cpu"
        cfg.optim.epochs = cfg.optim.epochs or 1  # a budget preset: any length, the lr barely moves in 10**6 steps
        runs[name] = Trainer(resolve(cfg), 1, torch.device("cpu"), print, steps_per_epoch=10**6)
    batch = args.batch or get_preset("fmnist").optim.batch_size
    views = tuple(torch.randn(batch, 1, 28, 28) for _ in range(2))
    times: dict[str, list[float]] = {n: [] for n in runs}
    for r in range(args.rounds + 1):  # round 0 warms up and is not counted
        for name, trainer in runs.items():
            t = time.perf_counter()
            trainer.step(views)
            if r:
                times[name].append(time.perf_counter() - t)
    result = {n: {"images_per_s": round(batch / statistics.median(ts), 1),
                  "step_s_median": round(statistics.median(ts), 3), "step_s_min": round(min(ts), 3)}
              for n, ts in times.items()}
    result["_setup"] = {"batch": batch, "threads": args.threads, "rounds": args.rounds,
                        **peak_memory(torch.device("cpu"))}
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
