"""Where a run's records go besides ``metrics.jsonl``: ``run.loggers`` = any of jsonl, csv, tensorboard.

``RunLog`` (``runlog.py``) hands every record to each logger named here; ``metrics.jsonl`` is
always written (resume, reports and plots read it), so ``jsonl`` needs no logger of its own.

* ``csv``: ``metrics_step.csv`` and ``metrics_epoch.csv``, one row per record, a column per key
  (a key first seen later, e.g. the first kNN accuracy, rewrites the file once with the wider header).
* ``tensorboard``: scalars (``step/*`` against the optimiser step, ``epoch/*`` against the epoch),
  the augmented views of one batch as an image grid, and the embedding projector at the end.
"""
from __future__ import annotations

import csv
from pathlib import Path
from typing import Optional

import torch

from ..config import ConfigError

LOGGERS = ("jsonl", "csv", "tensorboard")
TENSORBOARD_HINT = "pip install simsiam[tensorboard]"


class Logger:
    """What RunLog calls; a logger overrides what it records and ignores the rest."""

    def write(self, record: dict) -> None:
        pass

    def images(self, tag: str, grid: torch.Tensor) -> None:
        """A grid of images ``(C, H, W)`` in [0, 1]."""

    def embedding(self, features: torch.Tensor, labels: list, thumbnails: Optional[torch.Tensor], step: int) -> None:
        """Features ``(N, D)`` with their labels and images ``(N, C, h, w)`` in [0, 1] (or None)."""

    def keep_until(self, epoch: int, step: int) -> None:
        """On resume at ``step`` of ``epoch``: forget the records of the steps the interruption cut short."""

    def close(self) -> None:
        pass


def _scalars(record: dict) -> dict[str, float]:
    return {k: float(v) for k, v in record.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and k not in ("time", "epoch", "step")}


class CsvLogger(Logger):
    def __init__(self, run_dir: Path):
        self.run_dir = Path(run_dir)
        self.columns: dict[str, list[str]] = {}

    def _path(self, kind: str) -> Path:
        return self.run_dir / f"metrics_{kind}.csv"

    def write(self, record: dict) -> None:
        kind = record.get("kind")
        if kind not in ("step", "epoch"):
            return
        path = self._path(kind)
        columns = self.columns.get(kind)
        if columns is None and path.is_file():  # a resumed run: continue the file it left
            with open(path, newline="") as fh:
                columns = next(csv.reader(fh), None)
        row = {k: v for k, v in record.items() if k != "kind"}
        if columns is None or not set(row) <= set(columns):
            self._widen(path, (columns or []) + [k for k in row if k not in (columns or [])])
            columns = self.columns[kind]
        self.columns[kind] = columns
        with open(path, "a", newline="") as fh:
            csv.DictWriter(fh, columns).writerow(row)

    def _widen(self, path: Path, columns: list[str]) -> None:
        rows = []
        if path.is_file():
            with open(path, newline="") as fh:
                rows = list(csv.DictReader(fh))
        with open(path, "w", newline="") as fh:
            writer = csv.DictWriter(fh, columns)
            writer.writeheader()
            writer.writerows(rows)
        self.columns[path.stem.removeprefix("metrics_")] = columns

    def keep_until(self, epoch: int, step: int) -> None:
        """On resume: drop the rows of the steps the interruption cut short (as metrics.jsonl does)."""
        for kind in ("step", "epoch"):
            path = self._path(kind)
            if not path.is_file():
                continue
            with open(path, newline="") as fh:
                reader = csv.DictReader(fh)
                columns = reader.fieldnames or []
                rows = [r for r in reader if kept_on_resume({**r, "kind": kind}, epoch, step)]
            with open(path, "w", newline="") as fh:
                writer = csv.DictWriter(fh, columns)
                writer.writeheader()
                writer.writerows(rows)


class TensorBoardLogger(Logger):
    def __init__(self, run_dir: Path, resume_step: int = 0):
        from torch.utils.tensorboard import SummaryWriter

        # On resume, purge_step hides what the earlier process logged from this step on (the steps
        # the interruption cut short are trained again), so the curves do not double back.
        self.writer = SummaryWriter(str(Path(run_dir) / "tensorboard"), purge_step=resume_step or None)

    def write(self, record: dict) -> None:
        kind = record.get("kind")
        if kind == "step":
            for key, value in _scalars(record).items():
                self.writer.add_scalar(f"step/{key}", value, record["step"])
        elif kind == "epoch":
            for key, value in _scalars(record).items():
                if key != "epochs_done":
                    self.writer.add_scalar(f"epoch/{key}", value, record["epochs_done"])
        self.writer.flush()

    def images(self, tag: str, grid: torch.Tensor) -> None:
        self.writer.add_image(tag, grid.clamp(0, 1), 0)
        self.writer.flush()

    def embedding(self, features: torch.Tensor, labels: list, thumbnails: Optional[torch.Tensor], step: int) -> None:
        self.writer.add_embedding(features, metadata=labels, label_img=thumbnails, global_step=step, tag="knn_test_set")
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


def tensorboard_problem() -> str:
    """Why the tensorboard logger cannot run here ("" when it can)."""
    try:
        import tensorboard  # noqa: F401 -- torch.utils.tensorboard needs the package
    except ImportError:
        return f"run.loggers includes tensorboard, which is not installed: {TENSORBOARD_HINT}"
    return ""


def build_loggers(names: list[str], run_dir: Path, resume_step: int = 0) -> list[Logger]:
    loggers: list[Logger] = []
    for name in names:
        if name == "csv":
            loggers.append(CsvLogger(run_dir))
        elif name == "tensorboard":
            problem = tensorboard_problem()
            if problem:
                raise ConfigError(problem)
            loggers.append(TensorBoardLogger(run_dir, resume_step))
    return loggers


def kept_on_resume(record: dict, epoch: int, step: int) -> bool:
    """Whether a record written before an interruption stays when the run resumes at ``step`` of ``epoch``."""
    if record.get("kind") == "stopped" or int(record.get("epoch", 0)) < epoch:
        return True
    return int(record.get("epoch", 0)) == epoch and record.get("kind") == "step" and int(record["step"]) <= step
