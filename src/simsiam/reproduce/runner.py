"""Running a table: every row x seed is a normal pretraining run in ``OUT/TABLE/ROW/seedN``.

A run that raises is recorded as failed, one whose loss turns NaN as diverged, and the table
goes on. ``outcome.json`` in each run directory records what happened; re-running the command
skips finished runs (checkpoint at the last epoch, or a recorded divergence) and resumes
interrupted ones from their checkpoint. A run directory that holds a run of other settings is
refused rather than mixed in. Tables share rows (the default recipe is the reference row of most
of them), so a run whose whole config equals that of a run finished elsewhere under ``OUT`` is
copied from it instead of trained again (``outcome.json`` says ``reused_from``).
"""
from __future__ import annotations

import contextlib
import copy
import fcntl
import json
import os
import re
import shutil
import time
import traceback
from pathlib import Path
from typing import Callable, Iterator, Optional

import torch

from ..artifacts import checkpoint as ckpt_io
from ..artifacts.runlog import read_metrics
from ..config import Config, ConfigError, apply_overrides, from_dict
from ..config.presets import get_preset
from ..data.errors import DatasetNotFound
from ..resolve import resolve
from ..train.budget import settle_for_data
from ..train.speed import resolve_amp

Log = Callable[[str], None]


def slug(name: str) -> str:
    """A row name as a directory name: ``"k = one epoch"`` -> ``"k_one_epoch"``."""
    return re.sub(r"[^A-Za-z0-9.+-]+", "_", name).strip("_") or "row"


def row_config(preset: str, overrides: list[str], row: dict, seed: int, run_dir: Path) -> Config:
    """The preset, the table's setup, the user's overrides, then the row's own (so the ablated setting wins)."""
    cfg = get_preset(preset)
    apply_overrides(cfg, row.get("setup", []))
    apply_overrides(cfg, list(overrides))
    apply_overrides(cfg, row["overrides"])
    try:
        settle_for_data(cfg)  # a budget preset's epochs, which the warmup fraction and the resume checks need
    except DatasetNotFound:
        pass  # the run itself will fail with the places searched; a dry run or a config check need not
    if row.get("warmup_fraction"):  # the paper's 10 of 100 epochs, kept as a proportion of this run
        cfg.optim.warmup_epochs = row["warmup_fraction"] * cfg.optim.epochs
    cfg.run.seed, cfg.run.out_dir, cfg.run.quiet = seed, str(run_dir), True
    return cfg


def _comparable(cfg: dict) -> dict:
    """A config without what may differ between the runs of one row: where it runs, how long, how
    often it is monitored."""
    cfg = copy.deepcopy(cfg)
    cfg.pop("run", None)
    cfg.pop("monitor", None)
    cfg.get("optim", {}).pop("epochs", None)
    cfg.get("optim", {}).pop("warmup_epochs", None)
    return cfg


def _same_settings(saved: dict, cfg: Config) -> bool:
    """Whether a checkpoint's config is ``cfg``; fields added to the schema since take their defaults."""
    try:
        then = from_dict(saved)
    except ConfigError:  # a key the schema no longer has
        return False
    # Resolved on both sides: a recipe value added since (a None in the old file) is filled in as it was used.
    return _comparable(resolve(then).to_dict()) == _comparable(resolve(copy.deepcopy(cfg)).to_dict())


def _read_json(path: Path) -> Optional[dict]:
    return json.loads(path.read_text()) if path.is_file() else None


def _identity(cfg: Config) -> dict:
    """What makes two runs the same run: the whole resolved config (seed and epochs included) except
    where it is written and how its progress is shown."""
    d = resolve(copy.deepcopy(cfg)).to_dict()
    # run.compile too: compiling fuses the same ops (rounding only, tests/test_compiled_equals_eager.py), and
    # a finished run records what run.compile=auto settled to for its own length.
    for key in ("out_dir", "quiet", "log_every", "compile"):
        d["run"].pop(key, None)
    # A finished run records what run.amp=auto chose on this machine: compare like with like.
    device = torch.device("cuda" if str(d["run"]["device"]).startswith("cuda")
                          or (d["run"]["device"] == "auto" and torch.cuda.is_available()) else "cpu")
    d["run"]["amp"] = resolve_amp(d["run"]["amp"], device)[0]
    return d


def find_twin(cfg: Config, out: Path) -> Optional[Path]:
    """A run finished (and trained, not itself copied) under ``out/TABLE/ROW/seedN`` with ``cfg``'s
    exact settings, or None."""
    want, here = _identity(cfg), Path(cfg.run.out_dir).resolve()
    for config_file in sorted(out.glob("*/*/seed*/config.json")):
        run_dir = config_file.parent
        outcome = _read_json(run_dir / "outcome.json")
        if run_dir.resolve() == here or not outcome or outcome.get("status") != "done" or "reused_from" in outcome:
            continue
        try:
            then = from_dict(json.loads(config_file.read_text()))
        except (ConfigError, ValueError):  # a key the schema no longer has, or a damaged file
            continue
        if _identity(then) == want and (run_dir / "checkpoint.pt").is_file():
            return run_dir
    return None


def _copy_twin(twin: Path, run_dir: Path, epochs: int, log: Log) -> dict:
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    partial = run_dir.with_name(run_dir.name + ".copying")
    shutil.rmtree(partial, ignore_errors=True)
    shutil.copytree(twin, partial)
    shutil.rmtree(run_dir, ignore_errors=True)  # an attempt that died before its first checkpoint
    partial.rename(run_dir)  # whole or absent: a crash mid-copy leaves no half run behind
    outcome = {"status": "done", "epochs": epochs, "seconds": 0.0, "reused_from": str(twin)}
    (run_dir / "outcome.json").write_text(json.dumps(outcome, indent=1))
    log(f"  {run_dir}: the same settings as {twin}, finished there: copied, not trained again")
    return outcome


def _train(cfg: Config, log: Log, train: bool = True, out: Optional[Path] = None) -> dict:
    """Pretrain (or resume, or skip, or copy from an identical run under ``out``) one run; returns
    its outcome record. With ``train`` off an unfinished run is left as it is ("not run")."""
    from ..train.pretrain import TrainingDiverged, pretrain

    run_dir = Path(cfg.run.out_dir)
    prior = _read_json(run_dir / "outcome.json")
    if prior and prior["status"] == "diverged" and prior.get("epochs") == cfg.optim.epochs:
        return prior
    resume = False
    if (run_dir / "checkpoint.pt").is_file():
        saved = ckpt_io.load(run_dir / "checkpoint.pt")
        if not _same_settings(saved["config"], cfg):
            raise FileExistsError(f"{run_dir} holds a run of other settings; choose another --out")
        if saved["epoch"] >= cfg.optim.epochs:
            return prior if prior and prior["status"] == "done" else {"status": "done", "epochs": cfg.optim.epochs}
        resume = True
    if not train:
        return {"status": "not run", "epochs": cfg.optim.epochs}
    twin = find_twin(cfg, out) if out is not None and not resume else None
    if twin is not None:
        return _copy_twin(twin, run_dir, cfg.optim.epochs, log)
    if not resume and (run_dir / "metrics.jsonl").is_file():  # an attempt that died before its first checkpoint
        (run_dir / "metrics.jsonl").unlink()
    t0 = time.perf_counter()
    try:
        result = pretrain(cfg, resume=resume)
        outcome = {"status": "stopped" if result.stopped_early == "signal" else "done"}
    except TrainingDiverged as err:
        outcome = {"status": "diverged", "error": str(err)}
    except Exception as err:  # recorded, and the table goes on
        outcome = {"status": "failed", "error": f"{type(err).__name__}: {err}"}
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "error.txt").write_text(traceback.format_exc())
    outcome.update(epochs=cfg.optim.epochs, seconds=round(time.perf_counter() - t0, 1))
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "outcome.json").write_text(json.dumps(outcome, indent=1))
    log(f"  {run_dir}: {outcome['status']} in {outcome['seconds']:.0f}s" +
        (f" ({outcome['error']})" if "error" in outcome else ""))
    if outcome["status"] == "stopped":  # a stop signal ends the whole table, not just this run
        raise TableStopped(f"stopped by a signal during {run_dir} (checkpoint written); run the same command "
                           "again to resume it and go on with the rest")
    return outcome


class TableStopped(RuntimeError):
    """A stop signal (train/stop.py) ended a run of the table: it is checkpointed, and the rest waits
    for the command to be run again."""


def linear_available() -> bool:
    try:
        from ..eval.linear import linear_evaluate  # noqa: F401
    except ImportError:
        return False
    return True


def _linear(cfg: Config, epochs: int, log: Log) -> Optional[dict]:
    """Linear accuracy of a finished run (cached features of the run's own images), saved as linear.json.

    The paper's alternative recipe, SGD at lr 30 and batch 256: its LARS recipe (batch 4096) takes
    too few steps on a table's few thousand images to converge -- on a 10k-image Fashion-MNIST run
    LARS gave 40.8% where SGD gave 73.2% (and kNN 63.6%)."""
    from ..eval.linear import linear_config, linear_evaluate

    run_dir = Path(cfg.run.out_dir)
    saved = _read_json(run_dir / "linear.json")
    if saved is not None:
        return saved
    lin = linear_config("sgd", epochs=epochs, augment=False, train_limit=cfg.data.train_limit,
                        eval_limit=cfg.data.eval_limit, device=cfg.run.device, seed=cfg.run.seed)
    try:
        result = linear_evaluate(run_dir / "checkpoint.pt", lin)
    except Exception as err:
        log(f"  {run_dir}: linear evaluation failed: {type(err).__name__}: {err}")
        return None
    (run_dir / "linear.json").write_text(json.dumps(result, indent=1, default=str))
    return result


@contextlib.contextmanager
def _claim(run_dir: Path) -> Iterator[bool]:
    """An exclusive lock on ``run_dir`` (a lock file beside it, removed when released), held while this
    process trains it; yields False when another process holds it. So the same command started in two
    terminals shares the runs out between them instead of training any twice."""
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    path = run_dir.with_name(run_dir.name + ".lock")
    while True:
        fh = open(path, "a")
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            fh.close()
            yield False
            return
        if _same_file(fh, path):
            break
        # The holder before us released and removed the file between our open and our lock: the lock we
        # hold is on a name nobody else will open again. Take the lock on whatever file is there now.
        fh.close()
    try:
        yield True
    finally:
        path.unlink(missing_ok=True)  # while still holding it, so no one locks the file being removed
        fh.close()


def _same_file(fh, path: Path) -> bool:
    try:
        return os.fstat(fh.fileno()).st_ino == path.stat().st_ino
    except FileNotFoundError:
        return False


def run_rows(table: str, rows: list[dict], *, preset: str, seeds: list[int], overrides: list[str], out: Path,
             linear_epochs: int = 0, log: Log = print, train: bool = True) -> list[dict]:
    """Run every row x seed; returns one record per run: row, seed, run_dir, outcome, config, metrics, linear.
    With ``train`` off nothing new is trained: the records are those of the runs already finished."""
    records = []
    for row in rows:
        for seed in seeds:
            run_dir = out / table / slug(row["name"]) / f"seed{seed}"
            cfg = row_config(preset, overrides, row, seed, run_dir)
            changes = row.get("setup", []) + list(overrides) + row["overrides"]
            log(f"[{table}] {row['name']} (seed {seed}): {' '.join(changes) or 'the preset as it is'}")
            with _claim(run_dir) as mine:
                if mine:
                    outcome = _train(cfg, log, train, out)
                else:
                    outcome = {"status": "running elsewhere", "epochs": cfg.optim.epochs}
                    log(f"  {run_dir}: another process is training it; going on to the next run")
            linear = _linear(cfg, linear_epochs, log) if linear_epochs and outcome["status"] == "done" else None
            records.append({"row": row["name"], "seed": seed, "run_dir": run_dir, "outcome": outcome,
                            "config": cfg, "linear": linear,
                            "metrics": read_metrics(run_dir) if outcome["status"] in ("done", "diverged") else []})
    return records


def chance_accuracy(cfg: Config) -> Optional[float]:
    """100 / number of classes of the kNN monitor's labelled split (None without one)."""
    from ..data import load_dataset

    if not cfg.data.eval_split:
        return None
    classes = load_dataset(cfg.data.dataset, cfg.data.eval_split, cfg.data.data_dir).num_classes
    return 100.0 / classes if classes else None
