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
        print(f"{name:9s} {c.data.dataset:11s} {c.model.backbone} width {c.model.width}, d={c.model.dim}, "
              f"batch {c.optim.batch_size}, base lr {c.optim.base_lr}, wd {c.optim.weight_decay}, "
              f"{_length(c)}, aug {c.aug.recipe}")
        print(f"          {(make.__doc__ or '').strip().splitlines()[0]}")
    return 0


def _length(c) -> str:
    if c.optim.epochs:
        return f"{c.optim.epochs} epochs"
    return f"{c.optim.budget_images:,} images seen"
