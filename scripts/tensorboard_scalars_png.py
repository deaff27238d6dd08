"""Render a run's TensorBoard scalars to one PNG with matplotlib (for docs; reads the event files).

    python scripts/tensorboard_scalars_png.py RUN_DIR/tensorboard OUT.png
"""
from __future__ import annotations

import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402

PANELS = [("step/loss", "optimiser step"), ("step/lr", "optimiser step"),
          ("epoch/z_std_sqrt_d", "epoch"), ("epoch/knn_acc", "epoch")]


def main(logdir: str, out: str) -> None:
    events = EventAccumulator(logdir, size_guidance={"scalars": 0})
    events.Reload()
    fig, axes = plt.subplots(1, len(PANELS), figsize=(3.2 * len(PANELS), 2.6))
    for ax, (tag, xlabel) in zip(axes, PANELS):
        points = events.Scalars(tag) if tag in events.Tags()["scalars"] else []
        ax.plot([p.step for p in points], [p.value for p in points], marker="o" if len(points) < 10 else None)
        ax.set_title(tag, fontsize=9)
        ax.set_xlabel(xlabel, fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out, dpi=80)


if __name__ == "__main__":
    main(*sys.argv[1:3])
