"""The named presets: every recipe by name, for ``--preset`` and :func:`get_preset`.

The recipes themselves live in ``presets_paper`` (the paper as written), ``presets_cpu`` (sized for
a laptop CPU) and ``presets_methods`` (section 6's other methods); this module only names them.
"""
from __future__ import annotations

from typing import Callable

from .presets_cpu import digits, fmnist, small, tinyimagenet
from .presets_methods import METHOD_PRESETS
from .presets_paper import cifar10, imagenet
from .schema import Config, ConfigError

PRESETS: dict[str, Callable[[], Config]] = {
    "fmnist": fmnist,
    "small": small,
    "tinyimagenet": tinyimagenet,
    "cifar10": cifar10,
    "imagenet": imagenet,
    "digits": digits,
    **METHOD_PRESETS,  # section 6: simclr, moco_v2, byol, swav and their fmnist_* CPU recipes
}


def get_preset(name: str) -> Config:
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; choose one of: {', '.join(PRESETS)}")
    return PRESETS[name]()
