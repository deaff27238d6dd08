"""``simsiam reproduce TABLE``: run the rows of one of the paper's tables and compare with its figures."""
from __future__ import annotations

import argparse
import copy
import shlex
import time
from pathlib import Path

from ..config.presets import PRESETS


def add_parser(sub) -> None:
    from ..reproduce import table_names

    names = table_names()
    p = sub.add_parser(
        "reproduce", help="re-run one of the paper's ablation tables and compare with its figures",
        description="Runs every row of TABLE (sections 4-5 of the paper; 'all' runs every table) as a normal "
                    "pretraining run in OUT/TABLE/ROW/seedN, then writes OUT/TABLE/report.md: the paper's figure "
                    "beside ours, whether each claim held, curves overlaying the rows. A failed or diverged row "
                    "is recorded and the table goes on; re-running skips finished runs and resumes "
                    "interrupted ones.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("table", choices=names + ["all"], metavar="TABLE", help=f"one of: {', '.join(names)}, all")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                   help="applied to every row before the row's own overrides, e.g. optim.epochs=5 "
                        "data.train_limit=20000 (write them right after TABLE, or after --seeds)")
    p.add_argument("--preset", default="fmnist", choices=sorted(PRESETS), help="the recipe every row starts from")
    p.add_argument("--seeds", nargs="+", default=["0"], metavar="SEED",
                   help="one run per seed per row (KEY=VALUE overrides written after them are taken as overrides)")
    p.add_argument("--out", default="runs/reproduce", help="where OUT/TABLE/ROW/seedN and the reports go")
    p.add_argument("--linear", action="store_true",
                   help="also run linear evaluation (cached features; SGD lr 30, batch 256: LARS does not converge on a few thousand images) on every finished run")
    p.add_argument("--linear-epochs", type=int, default=90, help="epochs of that linear evaluation")
    p.add_argument("--rows", nargs="+", metavar="ROW", help="only the rows with these names (or directory names)")
    p.add_argument("--dry-run", action="store_true", help="print every run's overrides and directory; run nothing")
    p.add_argument("--report-only", action="store_true",
                   help="train nothing: write the reports from the runs already finished (others show as not run)")
    p.set_defaults(run=run)


def _seeds_and_overrides(args: argparse.Namespace) -> tuple[list[int], list[str]]:
    seeds = []
    overrides = list(args.overrides)
    for token in args.seeds:
        if "=" in token:
            overrides.append(token)
        elif token.lstrip("-").isdigit():
            seeds.append(int(token))
        else:
            raise ValueError(f"--seeds takes integers, got {token!r}")
    return seeds, overrides


def _command(args: argparse.Namespace, table: str, seeds: list[int], overrides: list[str]) -> str:
    parts = ["simsiam", "reproduce", table, *overrides, "--preset", args.preset, "--seeds", *map(str, seeds),
             "--out", args.out] + (["--linear", "--linear-epochs", str(args.linear_epochs)] if args.linear else [])
    return " ".join(shlex.quote(p) for p in parts)


def run(args: argparse.Namespace) -> int:
    from .common import until_stopped

    return until_stopped(args.command, lambda: _run(args))


def _run(args: argparse.Namespace) -> int:
    from ..artifacts.report import git_commit
    from ..reproduce import all_tables
    from ..reproduce.report import write_index, write_report
    from ..reproduce.runner import (
        chance_accuracy,
        linear_available,
        row_config,
        run_rows,
        slug,
    )
    from ..resolve import resolve

    git_commit()  # the reports name the code this process runs, read now, not after hours of training

    seeds, overrides = _seeds_and_overrides(args)
    out = Path(args.out)
    tables = all_tables(args.preset)
    names = list(tables) if args.table == "all" else [args.table]
    selected = {}
    for name in names:
        rows = [r for r in tables[name] if not args.rows or r["name"] in args.rows or slug(r["name"]) in args.rows]
        for row in rows:  # a typo in any row's overrides fails now, not after hours of earlier rows
            cfg = row_config(args.preset, overrides, row, seeds[0], out / name / slug(row["name"]) / f"seed{seeds[0]}")
            resolve(copy.deepcopy(cfg))
            if args.dry_run:
                print(f"{name} / {row['name']}: {' '.join(row.get('setup', []) + overrides + row['overrides'])}"
                      f"{' optim.warmup_epochs=' + str(cfg.optim.warmup_epochs) if row.get('warmup_fraction') else ''}"
                      f" -> {out / name / slug(row['name'])}/seed{{{','.join(map(str, seeds))}}}")
        if rows:
            selected[name] = rows
    if not selected:
        raise ValueError(f"no row of {args.table} is named {args.rows}")
    if args.dry_run:
        return 0
    linear_epochs = args.linear_epochs if args.linear else 0
    if args.linear and not linear_available():
        print("linear evaluation is not available in this installation; reporting kNN accuracy only")
        linear_epochs = 0
    for name, rows in selected.items():
        t0 = time.perf_counter()
        records = run_rows(name, rows, preset=args.preset, seeds=seeds, overrides=overrides, out=out,
                           linear_epochs=linear_epochs, train=not args.report_only)
        report = write_report(name, rows, records, out=out, command=_command(args, name, seeds, overrides),
                              preset=args.preset, overrides=overrides, seeds=seeds,
                              chance=chance_accuracy(records[0]["config"]), seconds=time.perf_counter() - t0)
        print(f"{name}: report in {report}")
    print(f"every table under {out}: {write_index(out, list(tables))}")
    return 0
