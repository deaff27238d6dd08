"""Argument handling shared by the subcommands that build a config, and the stop of table commands."""
from __future__ import annotations

import argparse
import sys
from typing import Callable, Optional

from ..config import Config, apply_mapping, apply_overrides, load_yaml
from ..config.presets import PRESETS, get_preset


def add_config_args(p: argparse.ArgumentParser, default_preset: str = "fmnist") -> None:
    p.add_argument("--preset", default=default_preset, choices=sorted(PRESETS),
                   help=f"named recipe to start from (default: {default_preset}); `simsiam presets` lists them")
    p.add_argument("--config", metavar="YAML", help="a YAML file of sections (data:, model:, optim: ...) applied on the preset")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                   help="dotted overrides applied last, e.g. optim.epochs=20 model.width=32 loss.stop_grad=false")
    p.add_argument("--data-dir", help="where the dataset lives (same as data.data_dir=...)")
    p.add_argument("--out-dir", help="the run directory (same as run.out_dir=...)")
    p.add_argument("--epochs", type=int, help="same as optim.epochs=...")
    p.add_argument("--seed", type=int, help="same as run.seed=...")
    p.add_argument("--device", help="auto, cpu, cuda, cuda:1 (same as run.device=...)")
    p.add_argument("--quiet", action="store_true",
                   help="no progress bar and no step lines: the run line, an epoch line about once a minute "
                        "and at each kNN evaluation, the final line")


def config_from_args(args: argparse.Namespace, base: Optional[Config] = None) -> Config:
    """The preset (or ``base``: a resumed run's own config), then the YAML file, the overrides and
    the shortcut options, in that order."""
    cfg = base if base is not None else get_preset(args.preset)
    if args.config:
        apply_mapping(cfg, load_yaml(args.config))
    shortcuts = {"data.data_dir": args.data_dir, "run.out_dir": args.out_dir, "optim.epochs": args.epochs,
                 "run.seed": args.seed, "run.device": args.device}
    apply_overrides(cfg, list(args.overrides))
    for key, value in shortcuts.items():
        if value is not None:
            apply_overrides(cfg, [f"{key}={value}"])
    if args.quiet:
        cfg.run.quiet = True
    return cfg


def until_stopped(command: str, body: Callable[[], int]) -> int:
    """A command that runs a table of runs (reproduce, sweep): a stop signal during one of them ends
    the command with one line and exit 75, the stopped run checkpointed for the next invocation."""
    from ..reproduce.runner import TableStopped
    from ..train.stop import EXIT_STOPPED

    try:
        return body()
    except TableStopped as stopped:
        print(f"simsiam {command}: {stopped}", file=sys.stderr)
        return EXIT_STOPPED
