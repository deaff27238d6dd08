"""``simsiam sweep``: a search over recipes on your own data, with the reproduce runner's machinery.

Rows come from axes written ``KEY=V1,V2,...``: ``--grid`` axes multiply (every combination),
``--vary`` axes move one at a time from the base recipe (the base row, then one row per other
value). Every row x seed is a normal pretraining run in ``OUT/sweep/ROW/seedN`` (resumable,
skipped once finished, copied when another row has the same settings); ``OUT/sweep/report.md``
ranks the rows by kNN accuracy beside the pixels and the random-init network.
"""
from __future__ import annotations

import itertools
import json
import math
import time
from pathlib import Path

from ..artifacts.report import git_commit
from ..config import ConfigError
from .report import final_epoch, format_stats, seed_stats, training_speed

SWEEP = "sweep"  # the table name: runs go to OUT/sweep/ROW/seedN


def parse_axes(specs: list[str]) -> dict[str, list[str]]:
    """``["optim.base_lr=0.1,0.2"]`` -> ``{"optim.base_lr": ["0.1", "0.2"]}``; a key given twice is an error."""
    axes: dict[str, list[str]] = {}
    for spec in specs:
        key, sep, values = spec.partition("=")
        key = key.strip()
        if not sep or not key or not values.strip():
            raise ConfigError(f"axis {spec!r} is not of the form KEY=V1,V2,... (e.g. optim.base_lr=0.1,0.2)")
        if key in axes:
            raise ConfigError(f"axis {key} is given twice; list all its values once: {key}=V1,V2,...")
        axes[key] = [v.strip() for v in values.split(",") if v.strip()]
    return axes


def _row(overrides: list[str]) -> dict:
    return {"name": " ".join(overrides) or "base", "overrides": overrides, "expect": []}


def sweep_rows(grid: dict[str, list[str]], vary: dict[str, list[str]]) -> list[dict]:
    """The rows: every combination of the ``grid`` axes; then, for each ``vary`` axis, each of its
    values alone on top of the first grid combination (the base row is not repeated)."""
    combos = [list(c) for c in itertools.product(*[[f"{k}={v}" for v in vs] for k, vs in grid.items()])]
    rows = [_row(c) for c in combos]
    base = combos[0]
    for key, values in vary.items():
        for value in values:
            rows.append(_row(base + [f"{key}={value}"]))
    seen, unique = set(), []
    for r in rows:
        if r["name"] not in seen:
            seen.add(r["name"])
            unique.append(r)
    return unique


def _baselines(metrics: list[dict]) -> dict:
    found = [r for r in metrics if r.get("kind") == "baselines"]
    return found[-1] if found else {}


def summarise_row(row: dict, runs: list[dict]) -> dict:
    done = [r for r in runs if r["outcome"]["status"] == "done"]
    finals = [final_epoch(r["metrics"]) for r in done]
    base = [_baselines(r["metrics"]) for r in done]
    return {
        "name": row["name"], "overrides": row["overrides"], "runs": len(runs), "finished": len(done),
        "failed": [f"seed {r['seed']}: {r['outcome']['status']} {r['outcome'].get('error', '')}".strip()
                   for r in runs if r["outcome"]["status"] != "done"],
        "knn": seed_stats([f.get("knn_acc") for f in finals]),
        "knn_t0.1": seed_stats([f.get("knn_acc_t0.1") for f in finals]),
        "knn_t0.2": seed_stats([f.get("knn_acc_t0.2") for f in finals]),
        "linear": seed_stats([r["linear"]["top1"] for r in done if r.get("linear")]),
        "std_sqrt_d": seed_stats([f.get("z_std_sqrt_d") for f in finals]),
        "epochs": seed_stats([f.get("epochs_done") for f in finals]),
        "minutes": seed_stats([r["outcome"].get("seconds", 0) / 60 for r in done if not r["outcome"].get("reused_from")]),
        "images_per_s": seed_stats([training_speed(r["metrics"]) for r in done]),
        "raw_pixels": seed_stats([b.get("raw_pixels") for b in base]),
        "standardised_pixels": seed_stats([b.get("standardised_pixels") for b in base]),
        "random_init": seed_stats([b.get("random_init") for b in base]),
    }


def _rank_key(s: dict) -> float:
    mean = s["knn"]["mean"]
    return -mean if mean is not None and math.isfinite(mean) else math.inf


def _earlier_rows(table_dir: Path, preset: str, overrides: list[str], now: set[str]) -> tuple[list[dict], list[str]]:
    """Rows (and commands) that earlier invocations on the same ``--out`` summarised and this one did
    not run: kept in the report when they started from the same preset and common overrides, so
    that ``--vary A`` then ``--vary B`` on one ``--out`` rank A's rows beside B's."""
    try:
        before = json.loads((table_dir / "summary.json").read_text())
    except (OSError, ValueError):
        return [], []
    if before.get("preset") != preset or before.get("overrides") != overrides:
        return [], []
    rows = [r for r in before.get("rows", []) if r.get("name") not in now]
    commands = before.get("commands") or [before.get("command", "")]
    return rows, [c for c in commands if c]


def write_sweep_report(rows: list[dict], records: list[dict], *, out: Path, command: str, preset: str,
                       overrides: list[str], seeds: list[int], seconds: float) -> Path:
    """``OUT/sweep/report.md`` (rows best first) and ``summary.json``, with the rows of earlier
    invocations on the same ``--out`` and base (:func:`_earlier_rows`)."""
    table_dir = out / SWEEP
    table_dir.mkdir(parents=True, exist_ok=True)
    current = [summarise_row(row, [r for r in records if r["row"] == row["name"]]) for row in rows]
    kept, earlier_commands = _earlier_rows(table_dir, preset, overrides, {row["name"] for row in rows})
    summaries = sorted(current + kept, key=_rank_key)
    commands = [c for c in earlier_commands if c != command] + [command]
    with_linear = any(s["linear"]["n"] for s in summaries)
    t = records[0]["config"].monitor.knn_t if records else 0.1
    k = records[0]["config"].monitor.knn_k if records else 200
    lines = [
        f"# Sweep on `{preset}`: rows ranked by kNN accuracy",
        "",
        *(f"- command: `{c}`" for c in commands),
        f"- preset `{preset}`; on every row: `{' '.join(overrides) or '-'}`; seeds {seeds}; commit `{git_commit()}`; "
        f"{time.strftime('%Y-%m-%d %H:%M')}; {seconds / 60:.0f} min this invocation",
        f"- kNN: k={k} on the last epoch's features at the monitor's T={t}, and at T=0.1 and T=0.2 from the "
        "same neighbours; mean ± std over seeds. Pixels and random init: the same kNN protocol (each run's own "
        "baselines record). Minutes: wall time of the run, monitors and baselines included.",
        "",
        "| row | kNN | kNN T=0.1 | kNN T=0.2 |" + (" linear |" if with_linear else "") +
        " raw pixels | std. pixels | random init | std x sqrt(d) | epochs | minutes | img/s | runs |",
        "|---|---:|---:|---:|" + ("---:|" if with_linear else "") + "---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for s in summaries:
        lines.append(
            f"| `{s['name']}` | {format_stats(s['knn'])} | {format_stats(s['knn_t0.1'])} | {format_stats(s['knn_t0.2'])} |"
            + (f" {format_stats(s['linear'])} |" if with_linear else "")
            + f" {format_stats(s['raw_pixels'])} | {format_stats(s['standardised_pixels'])} | {format_stats(s['random_init'])} |"
            f" {format_stats(s['std_sqrt_d'], 3)} | {format_stats(s['epochs'], 0)} | {format_stats(s['minutes'], 1)} |"
            f" {format_stats(s['images_per_s'], 0)} | {s['finished']}/{s['runs']} |")
    failed = [f"- `{s['name']}`, {f}" for s in summaries for f in s["failed"]]
    if failed:
        lines += ["", "## Runs not finished", "", *failed]
    lines += ["", f"Each run is a normal pretraining run in `{SWEEP}/ROW/seedN/` (config, metrics, checkpoint, "
              "report); re-running the command skips finished runs and resumes interrupted ones."]
    (table_dir / "report.md").write_text("\n".join(lines) + "\n")
    (table_dir / "summary.json").write_text(json.dumps(
        {"preset": preset, "overrides": overrides, "seeds": seeds, "command": command, "commands": commands,
         "rows": summaries},
        indent=1, default=str))
    return table_dir / "report.md"

