"""``simsiam presets``: the named recipes and their settings."""
from __future__ import annotations

import argparse

import yaml


def add_parser(sub) -> None:
    p = sub.add_parser("presets", help="list the named recipes with their settings",
                       description="List presets; with a name, print its full config as YAML (a starting point "
                                   "for --config).")
    p.add_argument("name", nargs="?", help="print this preset in full")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..config.presets import PRESETS, get_preset
    from ..resolve import resolve

    if args.name:
        print(yaml.safe_dump(resolve(get_preset(args.name)).to_dict(), sort_keys=False), end="")
        return 0
    for name, make in PRESETS.items():
        c = make()
        print(f"{name:9s} {c.data.dataset:11s} {c.model.backbone} width {c.model.width}, {features(c):,} features, "
              f"d={c.model.dim}, batch {c.optim.batch_size}, base lr {c.optim.base_lr}, wd {c.optim.weight_decay}, "
              f"{budget(c)}, aug {c.aug.recipe}")
        print(f"          {(make.__doc__ or '').strip().splitlines()[0]}")
    return 0


def features(c) -> int:
    """The width of the backbone's pooled features (the kNN's and linear probe's input). Built on the
    meta device: shapes only, no memory and no time for a ResNet-50."""
    import torch

    from ..models import build_backbone

    m = c.model
    with torch.device("meta"):
        return build_backbone(m.backbone, width=m.width, pool_grid=m.pool_grid,
                              feature_stages=m.feature_stages).num_features


def budget(c) -> str:
    """How long the preset trains, as the README's preset table says it: epochs, or images seen."""
    if c.optim.epochs:
        return f"{c.optim.epochs} epochs"
    return f"{c.optim.budget_images:,} images seen"
