"""The normalisation (per-channel mean/std) a checkpoint's backbone was trained with.

New images (``simsiam embed``) must be normalised as the training images were, and a detection
config needs the same numbers. The dataset loader knows them; file datasets use ImageNet's.
"""
from __future__ import annotations

import sys

from ..config import Config
from ..data import load_dataset
from ..data.files import imagenet_stats

# Datasets whose statistics are fixed constants: no need to read (or list) any file for them.
_FILE_DATASETS = ("imagefolder", "folder")


def training_normalisation(cfg: Config, in_channels: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """``(mean, std)`` with ``in_channels`` values each, as the checkpoint's training data used.

    When the training dataset is not on this machine, ImageNet's statistics (3 channels) or their
    average (1 channel) are used and a warning says so.
    """
    if cfg.data.dataset not in _FILE_DATASETS:
        try:
            ds = load_dataset(cfg.data.dataset, "train", cfg.data.data_dir)
            if ds.channels == in_channels:
                return tuple(ds.mean), tuple(ds.std)
        except Exception as err:  # missing or unreadable: fall back, but say so
            print(f"warning: cannot read the training dataset {cfg.data.dataset!r} for its normalisation "
                  f"({type(err).__name__}); using ImageNet's statistics instead", file=sys.stderr)
    return imagenet_stats(in_channels)
