"""The run's outputs as it goes: ``metrics.jsonl`` (one JSON object a line), terminal progress, and
the loggers ``run.loggers`` names (CSV, TensorBoard: ``loggers.py``), which get every record too.

What the console shows depends on where it goes:

- a terminal: a progress bar for each epoch, and every epoch's line;
- anything else (a log file, a pipe): no bar (its redraws would fill the file), a line every
  ``run.log_every`` steps instead, and every epoch's line;
- ``--quiet`` (``run.quiet``): neither bar nor step lines, and epoch lines at most about once a
  minute (:data:`EPOCH_LINE_SECONDS`), besides those with a kNN figure and the last: a small folder's
  one-step epochs would otherwise print a line a second.

Only the main process writes; under torchrun every other rank gets a logger that does nothing.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Optional, Sequence

from ..parallel import distributed as dist
from .checkpoint import naming
from .loggers import Logger, build_loggers, kept_on_resume

EPOCH_LINE_SECONDS = 60  # under --quiet, the least time between two routine epoch lines


class RunLog:
    def __init__(self, run_dir: Path, quiet: bool = False, loggers: Sequence[str] = (), resume_step: int = 0):
        self.enabled = dist.is_main()
        self.quiet = quiet
        self.path = Path(run_dir) / "metrics.jsonl"
        self.bar = None
        self.last_epoch_line = time.monotonic()  # the run's first line counts as one
        self.loggers: list[Logger] = build_loggers(list(loggers), Path(run_dir), resume_step) if self.enabled else []

    def write(self, record: dict) -> None:
        if not self.enabled:
            return
        record = {"time": round(time.time(), 3), **record}
        with naming(self.path), open(self.path, "a") as fh:
            fh.write(json.dumps(record) + "\n")
        for logger in self.loggers:
            logger.write(record)

    def keep_until(self, epoch: int, step: int) -> None:
        """On resume at ``step`` of ``epoch``: drop, everywhere, the records of the steps the
        interruption cut short (the resumed run redoes them); a "stopped" record stays."""
        if not self.enabled:
            return
        kept = [r for r in read_metrics(self.path.parent) if kept_on_resume(r, epoch, step)]
        with naming(self.path):
            self.path.write_text("".join(json.dumps(r) + "\n" for r in kept))
        for logger in self.loggers:
            logger.keep_until(epoch, step)

    def images(self, tag: str, grid) -> None:
        for logger in self.loggers:
            logger.images(tag, grid)

    def embedding(self, features, labels: list, thumbnails, step: int) -> None:
        for logger in self.loggers:
            logger.embedding(features, labels, thumbnails, step)

    def close(self) -> None:
        for logger in self.loggers:
            logger.close()

    def info(self, message: str) -> None:
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.write(message)
        else:
            print(message, flush=True)

    @property
    def shows_bars(self) -> bool:
        """Progress bars (the epoch's, the image decoding's): on a terminal, not under --quiet."""
        return self.enabled and not self.quiet and sys.stderr.isatty()  # tqdm writes to stderr

    @property
    def step_lines(self) -> bool:
        """Step records printed as lines: where no bar shows them, not under --quiet."""
        return not self.quiet and not self.shows_bars

    def epoch_line(self, message: str, always: bool = False) -> None:
        """An epoch's line; under --quiet only when ``always`` or a minute after the last one."""
        now = time.monotonic()
        if self.quiet and not always and now - self.last_epoch_line < EPOCH_LINE_SECONDS:
            return
        self.last_epoch_line = now
        self.info(message)

    def warn(self, message: str) -> None:
        if self.enabled:
            print(f"WARNING: {message}", file=sys.stderr, flush=True)

    def start_epoch(self, epoch: int, epochs: int, steps: int) -> None:
        if self.shows_bars:
            from tqdm import tqdm

            self.bar = tqdm(total=steps, desc=f"epoch {epoch + 1}/{epochs}", leave=False, dynamic_ncols=True)

    def step(self, postfix: Optional[dict] = None) -> None:
        if self.bar is not None:
            self.bar.update(1)
            if postfix:
                self.bar.set_postfix(postfix, refresh=False)

    def end_epoch(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def read_metrics(run_dir: str | Path) -> list[dict]:
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        return []
    with open(path) as fh:
        return [json.loads(line) for line in fh if line.strip()]

