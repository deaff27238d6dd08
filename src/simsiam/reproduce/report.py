"""A table's ``report.md``: the paper's figure beside ours for every row, whether each claim held,
Figure-2-style curves overlaying the rows, and ``summary.json`` with every number."""
from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Optional

from ..artifacts.report import git_commit, plot_curves
from .claims import run_collapsed, verdict


def seed_stats(values: list[float]) -> dict:
    """Mean, sample std and count of one figure over a row's seeds (missing and non-finite values skipped)."""
    values = [v for v in values if v is not None and math.isfinite(v)]
    if not values:
        return {"mean": None, "std": None, "n": 0}
    mean = sum(values) / len(values)
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else None
    return {"mean": mean, "std": std, "n": len(values)}


def final_epoch(metrics: list[dict]) -> dict:
    """The last epoch record of a run's metrics ({} when it has none)."""
    epochs = [r for r in metrics if r.get("kind") == "epoch"]
    return epochs[-1] if epochs else {}


def training_speed(metrics: list[dict]) -> Optional[float]:
    """Training images/s of a run: its epochs' images over their seconds (monitors excluded)."""
    epochs = [r for r in metrics if r.get("kind") == "epoch" and r.get("images_per_s")]
    seconds = sum(r["epoch_seconds"] for r in epochs if r.get("epoch_seconds"))
    if not seconds:
        return None
    return sum(r["images_per_s"] * r["epoch_seconds"] for r in epochs if r.get("epoch_seconds")) / seconds


def _peak_mb(metrics: list[dict]) -> Optional[float]:
    """The run's peak memory: on a GPU the allocator's, else the process's resident set (MiB)."""
    peaks = [r.get("peak_cuda_mb", r.get("peak_rss_mb")) for r in metrics if r.get("kind") == "epoch"]
    peaks = [p for p in peaks if p is not None]
    return max(peaks) if peaks else None


def summarise(row: dict, runs: list[dict], chance: Optional[float]) -> dict:
    """Mean and spread over the row's seeds; collapse counted over its finished runs."""
    done = [r for r in runs if r["outcome"]["status"] == "done"]
    finals = [final_epoch(r["metrics"]) for r in done]
    collapsed = [run_collapsed(f, r["config"].monitor.collapse_threshold, chance) for f, r in zip(finals, done)]
    return {
        "name": row["name"], "paper": row.get("paper", ""), "claim": row.get("claim", ""),
        "overrides": row["overrides"], "warmup_fraction": row.get("warmup_fraction", 0.0),
        "runs": len(runs), "finished": len(done), "collapsed": sum(collapsed),
        "diverged": sum(r["outcome"]["status"] == "diverged" for r in runs),
        "failed": [f"seed {r['seed']}: {r['outcome'].get('error', '')}" for r in runs if r["outcome"]["status"] == "failed"],
        "knn": seed_stats([f.get("knn_acc") for f in finals]),
        "linear": seed_stats([r["linear"]["top1"] for r in done if r.get("linear")]),
        "std_sqrt_d": seed_stats([f.get("z_std_sqrt_d") for f in finals]),
        "loss": seed_stats([f.get("loss") for f in finals]),
        "epochs": seed_stats([f.get("epochs_done") for f in finals]),
        "images_per_s": seed_stats([training_speed(r["metrics"]) for r in done]),
        "peak_mb": seed_stats([_peak_mb(r["metrics"]) for r in done]),
    }


def format_stats(s: dict, digits: int = 2) -> str:
    """``mean ± std`` for a table cell; ``-`` when no seed has the figure."""
    if s["mean"] is None:
        return "-"
    text = f"{s['mean']:.{digits}f}"
    return text + (f" ± {s['std']:.{digits}f}" if s["std"] is not None else "")


def _yes_no(count: int, total: int) -> str:
    if total == 0:
        return "-"
    return ("yes" if count == total else "no" if count == 0 else "some") + (f" ({count}/{total})" if total > 1 else "")


def write_report(table: str, rows: list[dict], records: list[dict], *, out: Path, command: str, preset: str,
                 overrides: list[str], seeds: list[int], chance: Optional[float], seconds: float) -> Path:
    table_dir = out / table
    table_dir.mkdir(parents=True, exist_ok=True)
    summaries = [summarise(row, [r for r in records if r["row"] == row["name"]], chance) for row in rows]
    by_name = {s["name"]: s for s in summaries}
    for row, s in zip(rows, summaries):
        s["verdict"], s["reasons"] = verdict(row, s, by_name)

    curves = [(r["row"] + (f" (seed {r['seed']})" if len(seeds) > 1 else ""), r["metrics"]) for r in records]
    plot_curves(curves, table_dir / "curves.png", title=f"{table} on {preset}")

    threshold = records[0]["config"].monitor.collapse_threshold if records else None
    with_linear = any(s["linear"]["n"] for s in summaries)
    lines = [
        f"# `{table}`: the paper's figures beside this run's",
        "",
        f"- command: `{command}`",
        f"- preset `{preset}`; overrides on every row: `{' '.join(overrides) or '-'}`; seeds {seeds}; "
        f"commit `{git_commit()}`; {time.strftime('%Y-%m-%d %H:%M')}; {seconds / 60:.0f} min this invocation",
        "- paper: ImageNet linear accuracy (%), ResNet-50, 100 epochs. Ours: kNN accuracy (%) of the last "
        "epoch" + (" and linear accuracy (%)" if with_linear else "") + ", mean ± std over seeds.",
        f"- collapsed: std(z/|z|) x sqrt(d) < {threshold} (`monitor.collapse_threshold`) or kNN within 5 points "
        f"of chance ({chance:.1f}%)." if chance is not None else
        f"- collapsed: std(z/|z|) x sqrt(d) < {threshold} (`monitor.collapse_threshold`).",
    ]
    setups = sorted({" ".join(r.get("setup", [])) for r in rows} - {""})
    if setups:
        lines.append(f"- the table's setup, applied before the command line's overrides: `{'`, `'.join(setups)}`")
    lines += [
        "",
        "| row | overrides | paper | kNN (ours) |" + (" linear (ours) |" if with_linear else "") +
        " std x sqrt(d) | final loss | collapsed | diverged | runs | img/s | peak MiB |",
        "|---|---|---:|---:|" + ("---:|" if with_linear else "") + "---:|---:|---|---|---:|---:|---:|",
    ]
    for s in summaries:
        extra = f" warmup {s['warmup_fraction']:.0%} of epochs" if s["warmup_fraction"] else ""
        lines.append(
            f"| {s['name']} | `{' '.join(s['overrides']) or '-'}`{extra} | {s['paper']} | {format_stats(s['knn'])} |"
            + (f" {format_stats(s['linear'])} |" if with_linear else "")
            + f" {format_stats(s['std_sqrt_d'], 3)} | {format_stats(s['loss'], 4)} | {_yes_no(s['collapsed'], s['finished'])} |"
            f" {_yes_no(s['diverged'], s['runs'])} | {s['finished']}/{s['runs']} |"
            f" {format_stats(s['images_per_s'], 0)} | {format_stats(s['peak_mb'], 0)} |")
    lines += ["", "img/s: training images per second over the run's epochs (monitors excluded); peak MiB: the "
              "GPU allocator's peak on a GPU, else the process's peak resident memory. Copied rows (a run "
              "with the same settings in another table) show the figures of the run they were copied from.",
              "", "## The paper's claims", "", "| row | claim | held here? | numbers |", "|---|---|---|---|"]
    for s in summaries:
        lines.append(f"| {s['name']} | {s['claim']} | **{s['verdict']}** | {s['reasons']} |")
    failed = [f"- {s['name']}, {f}" for s in summaries for f in s["failed"]]
    if failed:
        lines += ["", "## Failed runs", "", *failed]
    lines += ["", "![curves](curves.png)", "",
              f"Each run is a normal pretraining run in `{table}/ROW/seedN/` (config, metrics, checkpoint, report)."]
    (table_dir / "report.md").write_text("\n".join(lines) + "\n")
    (table_dir / "summary.json").write_text(json.dumps(
        {"table": table, "preset": preset, "overrides": overrides, "seeds": seeds, "command": command,
         "chance": chance, "rows": summaries}, indent=1, default=str))
    return table_dir / "report.md"


def write_index(out: Path, order: list[str]) -> Path:
    """``OUT/summary.md``: the rows of every table reported under ``out`` in one table (read back
    from each ``OUT/TABLE/summary.json``, tables in ``order``), with the command that made each."""
    found = {p.parent.name: json.loads(p.read_text()) for p in out.glob("*/summary.json")}
    names = [n for n in order if n in found] + sorted(n for n in found if n not in order)
    lines = ["# Every table under this directory", "",
             "Written by `simsiam reproduce` after each table; the details are in `TABLE/report.md`.",
             "kNN and linear: mean ± std over the seeds run (paper: ImageNet linear accuracy, 100 epochs).", "",
             "| table | row | paper | kNN (ours) | linear (ours) | std x sqrt(d) | final loss | collapsed | claim held? "
             "| seeds |", "|---|---|---:|---:|---:|---:|---:|---|---|---:|"]
    for name in names:
        for s in found[name]["rows"]:
            lines.append(f"| {name} | {s['name']} | {s['paper']} | {format_stats(s['knn'])} | {format_stats(s['linear'])} |"
                         f" {format_stats(s['std_sqrt_d'], 3)} | {format_stats(s['loss'], 4)} | {_yes_no(s['collapsed'], s['finished'])} |"
                         f" {s.get('verdict', '-')} | {s['finished']}/{s['runs']} |")
    lines += ["", "Commands:", ""] + [f"- {name}: `{found[name]['command']}`" for name in names]
    path = out / "summary.md"
    path.write_text("\n".join(lines) + "\n")
    return path
