"""The training budget in what it costs: images seen, turned into epochs for the data at hand.

A preset sized in epochs gives a small folder a few hundred steps and a large one hours. The CPU
presets instead say how many images the run sees (``optim.budget_images``, with ``optim.epochs=0``),
which is what the wall time is proportional to: 600,000 images are 10 epochs of Fashion-MNIST and
75 epochs of an 8,000-image folder, about the same minutes either way. ``optim.epochs`` given on
the command line (anything but 0) wins. ``monitor.every=0`` likewise spreads the kNN monitor over
about :data:`MONITOR_POINTS` evaluations, whatever the number of epochs.
"""
from __future__ import annotations

import functools
import math
from typing import Optional

from ..config import Config, ConfigError
from ..config.checks import NO_BUDGET
from ..data.sampler import images_per_epoch

MONITOR_POINTS = 5  # kNN evaluations per run when monitor.every=0 (the last epoch is always one)


def epochs_for(budget_images: int, images_an_epoch: int) -> int:
    """Whole epochs closest to ``budget_images`` images seen, at least one."""
    return max(1, round(budget_images / images_an_epoch))


def settle_budget(cfg: Config, train_images: int) -> str:
    """Fill ``optim.epochs`` (when 0) from ``optim.budget_images`` and ``monitor.every`` (when 0);
    returns the line saying what was chosen and why ("" when the config already named both).

    An epoch trains on whole batches only, so the budget is divided by the images an epoch trains
    on, not by the training set: 245 images at batch 128 train 128 an epoch, not 245."""
    o = cfg.optim
    said = ""
    if o.epochs == 0:
        if o.budget_images <= 0:
            raise ConfigError(NO_BUDGET)
        if train_images <= 0:
            raise ConfigError("the training set is empty: there is nothing to train on")
        trained = images_per_epoch(train_images, o.batch_size)
        if trained == 0:
            raise ConfigError(f"the dataset has {train_images} training images, fewer than one batch "
                              f"(optim.batch_size={o.batch_size}); lower the batch size")
        o.epochs = epochs_for(o.budget_images, trained)
        left_out = train_images - trained
        per_epoch = (f"{trained:,} images trained an epoch ({train_images:,} training images in whole batches of "
                     f"{o.batch_size}; {left_out:,} left out of each epoch, others each time)"
                     if left_out else f"{train_images:,} training images")
        said = (f"budget: {o.budget_images:,} images seen (optim.budget_images) / {per_epoch} "
                f"= {o.epochs:,} epochs; optim.epochs=N overrides")
    if cfg.monitor.every == 0:
        cfg.monitor.every = max(1, math.ceil(o.epochs / MONITOR_POINTS))
    return said


def settle_for_data(cfg: Config) -> str:
    """:func:`settle_budget` counting the training images itself (for callers that have not loaded
    them, such as the reproduce runner, which needs the epochs to know whether a run is finished)."""
    if cfg.optim.epochs and cfg.monitor.every:
        return ""
    return settle_budget(cfg, training_images(cfg.data.dataset, cfg.data.data_dir, cfg.data.train_limit))


@functools.lru_cache(maxsize=None)
def training_images(dataset: str, data_dir: Optional[str], train_limit: int) -> int:
    """How many images a run trains on. Counted once per process: a sweep asks for every row and seed,
    and listing a 100,000-file folder each time would cost seconds per row."""
    from ..data import load_dataset

    images = len(load_dataset(dataset, "train", data_dir))
    return min(images, train_limit) if train_limit > 0 else images
