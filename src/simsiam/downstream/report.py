"""A fine-tune's outputs: ``results.json``, ``report.md`` and ``label_efficiency.png``.

Accuracies are the test split's, as mean +- sample standard deviation over the label seeds; the
settings each contender chose on the validation part are listed beside them.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Sequence

from ..artifacts.checkpoint import write_atomic
from ..artifacts.report import git_commit
from ..data.label_budget import LabelBudget
from .recipe import CONTENDER_NAMES


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for one value)."""
    n = len(values)
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
    return mean, std


def summarise(cells: list[dict], budgets: Sequence[LabelBudget], contenders: Sequence[str],
              num_classes: int) -> list[dict]:
    """One row per (budget, contender): test accuracy mean and std over the seeds, the labels used."""
    rows = []
    for budget in budgets:
        for contender in contenders:
            mine = [c for c in cells if c["budget"] == budget.name and c["contender"] == contender]
            if not mine:
                continue
            mean, std = mean_std([c["test"] for c in mine])
            first = next((c for c in mine if c["searched"]), mine[0])
            rows.append({"budget": budget.name, "contender": contender, "test_mean": mean, "test_std": std,
                         "seeds": len(mine), "labelled": mine[0]["labelled"],
                         "labels_per_class": mine[0]["labelled"] / num_classes,
                         "val_mean": mean_std([c["val"] for c in mine])[0], "choice": first["choice"]})
    return rows


def write_outputs(out: Path, results: dict, budgets: Sequence[LabelBudget], contenders: Sequence[str]) -> None:
    rows = summarise(results["cells"], budgets, contenders, len(results["classes"]))
    results["summary"] = rows
    results["commit"] = git_commit()
    write_atomic(out / "results.json", lambda fh: fh.write(json.dumps(results, indent=2).encode()))
    report = render_report(results, rows, budgets, contenders)
    write_atomic(out / "report.md", lambda fh: fh.write(report.encode()))
    plot_label_efficiency(rows, contenders, out / "label_efficiency.png", results["settings"]["dataset"])


def render_report(results: dict, rows: list[dict], budgets: Sequence[LabelBudget], contenders: Sequence[str]) -> str:
    s = results["settings"]
    precision = "bf16" if results["precision"] == "bf16" else "fp32"
    lines = [f"# Fine-tuning with few labels: {s['dataset']}", "",
             f"Pretraining run `{s['run']}`; labelled data `{s['dataset']}`"
             + (f" (`{s['data_dir']}`)" if s["data_dir"] else "")
             + f", tested on its `{s['split']}` split at {s['image_size']} px; label seeds {s['label_seeds']}; "
             f"precision {precision}; commit `{results['commit']}`.", "",
             "Test accuracy (%), mean +- std over the label seeds. Every contender chose its setting (lr, or k) on "
             "a validation part carved from the labelled images (the first seed's); the test split chose nothing.", ""]
    header = "| budget | labelled images | " + " | ".join(CONTENDER_NAMES[c] for c in contenders) + " |"
    lines += [header, "|---|---:|" + "---:|" * len(contenders)]
    for budget in budgets:
        mine = {r["contender"]: r for r in rows if r["budget"] == budget.name}
        if not mine:
            continue
        cells = [f"{mine[c]['test_mean']:.2f} +- {mine[c]['test_std']:.2f}" if c in mine else "" for c in contenders]
        labelled = next(iter(mine.values()))["labelled"]
        lines.append(f"| {budget.name} | {labelled:,} | " + " | ".join(cells) + " |")
    lines += ["", "Fine-tuned against scratch (points, mean over seeds):", ""]
    for budget in budgets:
        mine = {r["contender"]: r for r in rows if r["budget"] == budget.name}
        if "finetune" in mine and "scratch" in mine:
            gain = mine["finetune"]["test_mean"] - mine["scratch"]["test_mean"]
            lines.append(f"- {budget.name}: {gain:+.2f}")
    lines += ["", "Settings chosen on the validation part:", "", "| budget | contender | chosen | validation (%, mean over seeds) |",
              "|---|---|---|---:|"]
    for r in rows:
        chosen = ", ".join(f"{k} {v:g}" if isinstance(v, float) else f"{k} {v}" for k, v in r["choice"].items())
        lines.append(f"| {r['budget']} | {CONTENDER_NAMES[r['contender']]} | {chosen} | {r['val_mean']:.2f} |")
    lines += ["", "Recipe: docs/FINETUNE.md. The models are in `models/`; `simsiam predict MODEL --data DIR` "
              "classifies a folder with one.", ""]
    return "\n".join(lines)


def plot_label_efficiency(rows: list[dict], contenders: Sequence[str], path: Path, dataset: str) -> Path:
    """Test accuracy against labels per class (log axis), one line per contender, pixels dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for contender in contenders:
        mine = sorted((r for r in rows if r["contender"] == contender), key=lambda r: r["labels_per_class"])
        if not mine:
            continue
        ax.errorbar([r["labels_per_class"] for r in mine], [r["test_mean"] for r in mine],
                    yerr=[r["test_std"] for r in mine], marker="o", capsize=3, label=CONTENDER_NAMES[contender],
                    linestyle="--" if contender == "pixels_knn" else "-")
    ax.set_xscale("log")
    ax.set_xlabel("labelled images per class (log)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(f"Label efficiency on {dataset}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    tmp.replace(path)
    return path
