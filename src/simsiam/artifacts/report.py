"""End-of-run outputs: the Figure 2 plots and a short ``report.md`` with the run's provenance."""
from __future__ import annotations

import functools
import io
import subprocess
import sys
from pathlib import Path
from typing import Sequence

from ..config import Config
from .checkpoint import write_atomic
from .runlog import read_metrics


@functools.lru_cache(maxsize=1)
def git_commit() -> str:
    """The commit of the code that ran ("unknown" outside a git checkout), marked when it was dirty.
    Read once per process (``pretrain`` and ``reproduce`` ask at their start): the working tree
    may move on while a long run trains, but the code the process imported does not."""
    here = Path(__file__).resolve().parent
    try:
        sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=here, capture_output=True, text=True,
                             timeout=5).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return (sha + ("-dirty" if dirty else "")) if sha else "unknown"


def plot_curves(runs: Sequence[tuple[str, list[dict]]], path: Path, title: str = "") -> Path:
    """Figure 2's three panels (training loss, std of l2-normalised z x sqrt(d), kNN accuracy)
    against epoch, one line per run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    panels = [("loss", "training loss"), ("z_std_sqrt_d", "std(z/|z|) x sqrt(d)"), ("knn_acc", "kNN accuracy (%)")]
    for ax, (key, label) in zip(axes, panels):
        for name, records in runs:
            pts = [(r["epochs_done"], r[key]) for r in records if r.get("kind") == "epoch" and key in r]
            if pts:
                xs, ys = zip(*pts)
                ax.plot(xs, ys, marker="o" if len(xs) < 30 else None, label=name)
        ax.set_xlabel("epoch")
        ax.set_title(label)
        ax.grid(alpha=0.3)
    axes[1].axhline(0, color="grey", lw=0.8)
    if len(runs) == 1:  # the baselines a run recorded at its end, as reference lines on the kNN panel
        for r in _last_baselines(runs[0][1]):
            for key, style in (("raw_pixels", ":"), ("random_init", "--")):
                if key in r:
                    axes[2].axhline(r[key], color="grey", ls=style, lw=1, label=key.replace("_", " "))
            axes[2].legend(fontsize=8)
    if len(runs) > 1:
        axes[2].legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    png = io.BytesIO()
    fig.savefig(png, format="png", dpi=110)
    plt.close(fig)
    return write_atomic(path, lambda fh: fh.write(png.getvalue()))  # a full disk names the file, leaves no half


def write_outputs(run_dir: Path, cfg: Config, result) -> None:
    records = read_metrics(run_dir)
    plot_curves([(cfg.preset or cfg.method, records)], run_dir / "curves.png",
                title=f"{cfg.method} {cfg.model.backbone} on {cfg.data.dataset}")
    epochs = [r for r in records if r.get("kind") == "epoch"]
    lines = [
        f"# {cfg.method} run: {run_dir}",
        "",
        f"- command: `{' '.join(['simsiam'] + sys.argv[1:]) if sys.argv and 'simsiam' in sys.argv[0] else 'python API'}`",
        f"- preset: `{cfg.preset or '-'}`, seed {cfg.run.seed}, commit `{git_commit()}`",
        f"- data: {cfg.data.dataset}, backbone {cfg.model.backbone}"
        # model.width sizes only the built-in ResNets, not timm:<name> or custom:<class> backbones
        + ("" if ":" in cfg.model.backbone else f" (width {cfg.model.width})") + ", "
        f"batch {cfg.optim.batch_size}, base lr {cfg.optim.base_lr}, {cfg.optim.epochs} epochs planned, "
        f"{result.epochs_done} done" + (f" (stopped: {result.stopped_early})" if result.stopped_early else ""),
        *([f"- images: {result.images}"] if result.images else []),
        f"- total training time: {sum(r.get('epoch_seconds', 0) for r in epochs):.0f} s (monitors excluded)",
        "",
        "| epoch | loss | std x sqrt(d) | kNN acc (%) | img/s |",
        "|---:|---:|---:|---:|---:|",
    ]
    for r in epochs:
        knn = f"{r['knn_acc']:.2f}" if "knn_acc" in r else ""
        lines.append(f"| {r['epochs_done']} | {r['loss']:.4f} | {r['z_std_sqrt_d']:.3f} | {knn} | {r['images_per_s']:.0f} |")
    for r in _last_baselines(records):
        lines += ["", f"Baselines under the same kNN protocol (k={r['k']}, T={r['t']}): "
                  + ", ".join(f"{key.replace('_', ' ')} {r[key]:.2f}%" for key in ("raw_pixels", "standardised_pixels",
                                                                                 "random_init") if key in r) + "."]
    lines += ["", "![curves](curves.png)", "", "The full config is in `config.json`; every record in `metrics.jsonl`."]
    write_atomic(run_dir / "report.md", lambda fh: fh.write(("\n".join(lines) + "\n").encode()))


def _last_baselines(records: list[dict]) -> list[dict]:
    """The run's baselines record, the last one when a finished run was resumed (its end runs again)."""
    return [r for r in records if r.get("kind") == "baselines"][-1:]


# What a finished run's end writes (write_outputs): a resume of a finished run without them writes them again.
OUTPUTS = ("report.md", "curves.png")


def missing_outputs(run_dir: str | Path) -> list[str]:
    return [name for name in OUTPUTS if not (Path(run_dir) / name).is_file()]
