"""``simsiam sweep``: search recipes on your own data -- a grid of overrides at a short budget, ranked."""
from __future__ import annotations

import argparse
import copy
import shlex
import time
from pathlib import Path

from ..config.presets import PRESETS


def add_parser(sub) -> None:
    p = sub.add_parser(
        "sweep", help="try recipes on your data: a grid of overrides, each a run, ranked by kNN accuracy",
        description="Every combination of the --grid axes (and each --vary value alone on top of the first "
                    "combination) is a normal pretraining run in OUT/sweep/ROW/seedN; OUT/sweep/report.md ranks "
                    "them by kNN accuracy beside raw pixels and the random-init network, with kNN at T=0.1 "
                    "and 0.2, linear accuracy (--linear), std(z/|z|) x sqrt(d), epochs and wall time. "
                    "Re-running skips finished runs and resumes interrupted ones. Example: simsiam sweep "
                    "--preset fmnist --vary optim.base_lr=0.1,0.4 aug.crop_scale_min=0.4 --seeds 0 1 "
                    "optim.budget_images=120000",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                   help="applied to every row first, e.g. optim.budget_images=120000 data.data_dir=~/photos")
    p.add_argument("--preset", default="fmnist", choices=sorted(PRESETS), help="the recipe every row starts from")
    p.add_argument("--data-dir", help="where the dataset lives (same as data.data_dir=... on every row)")
    p.add_argument("--grid", nargs="+", default=[], metavar="KEY=V1,V2",
                   help="axes whose every combination is a row")
    p.add_argument("--vary", nargs="+", default=[], metavar="KEY=V1,V2",
                   help="axes moved one at a time from the base row (the first grid combination)")
    p.add_argument("--seeds", nargs="+", type=int, default=[0], metavar="SEED", help="one run per seed per row")
    p.add_argument("--out", default="runs/sweep", help="runs go to OUT/sweep/ROW/seedN, the report to OUT/sweep/")
    p.add_argument("--linear", action="store_true", help="also linear accuracy on cached features of every run")
    p.add_argument("--linear-epochs", type=int, default=30, help="epochs of that linear evaluation")
    p.add_argument("--dry-run", action="store_true", help="print every row's overrides; run nothing")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from .common import until_stopped

    return until_stopped(args.command, lambda: _run(args))


def _run(args: argparse.Namespace) -> int:
    from ..artifacts.report import git_commit
    from ..reproduce.runner import row_config, run_rows
    from ..reproduce.sweep import SWEEP, parse_axes, sweep_rows, write_sweep_report
    from ..resolve import resolve

    git_commit()  # the report names the code this process runs
    if args.data_dir:
        args.overrides = [f"data.data_dir={args.data_dir}", *args.overrides]
    rows = sweep_rows(parse_axes(args.grid), parse_axes(args.vary))
    out = Path(args.out)
    for row in rows:  # a typo in any row fails now, not after hours of earlier rows
        cfg = row_config(args.preset, args.overrides, row, args.seeds[0], out / SWEEP / "check")
        resolve(copy.deepcopy(cfg))
        if args.dry_run:
            print(f"{row['name']}  ({cfg.optim.epochs} epochs)")
    if args.dry_run:
        return 0
    command = " ".join(shlex.quote(a) for a in ["simsiam", "sweep", *args.overrides, "--preset", args.preset]
                       + (["--grid", *args.grid] if args.grid else []) + (["--vary", *args.vary] if args.vary else [])
                       + ["--seeds", *map(str, args.seeds), "--out", args.out]
                       + (["--linear", "--linear-epochs", str(args.linear_epochs)] if args.linear else []))
    t0 = time.perf_counter()
    kw = dict(preset=args.preset, seeds=args.seeds, overrides=args.overrides, out=out,
              linear_epochs=args.linear_epochs if args.linear else 0)
    run_rows(SWEEP, rows, **kw)
    # Read every run back for the report, those another process trained meanwhile included.
    records = run_rows(SWEEP, rows, **kw, train=False, log=lambda _: None)
    report = write_sweep_report(rows, records, out=out, command=command, preset=args.preset,
                                overrides=args.overrides, seeds=args.seeds, seconds=time.perf_counter() - t0)
    print(f"sweep: report in {report}")
    return 0
