"""Which settings a resumed run may change, and whether ``--resume auto`` resumes, starts or stops.

A resumed run continues with its own recipe. Settings that do not change what is trained -- where
and how progress is shown, the device, checkpoint frequency, the monitors -- may differ, and so
may the number of epochs (the cosine schedule is then that of the new length from the resumed
step on). Any other difference would leave a run that is neither the old recipe nor the new one,
so it is refused with the keys named, rather than dropped in silence.
"""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Optional

from ..artifacts import checkpoint as ckpt_io
from ..config import Config, ConfigError, from_dict
from ..resolve import resolve

CHANGEABLE_ON_RESUME = ("optim.epochs", "run.out_dir", "run.quiet", "run.device", "run.log_every", "run.loggers",
                        "run.checkpoint_every_steps", "run.checkpoint_every_minutes", "run.keep_checkpoints",
                        "run.epoch_checkpoint_minutes", "run.threads",
                        "data.data_dir", "data.num_workers", "data.eval_limit", "monitor.",
                        # the same draws, the same views to float rounding: how they are computed
                        "data.augment_kernel",
                        # precision changes rounding only, and fp32 is the way out of a bf16 fault
                        # (train/finite_guard.py)
                        "run.amp",
                        # compiling fuses the same ops (rounding only); "auto" keeps the run's own choice
                        "run.compile")


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def differences(saved: dict, cfg: Config) -> dict[str, tuple]:
    """``{key: (saved value, cfg's value)}`` for every resolved setting that differs."""
    then = _flat(resolve(from_dict(saved)).to_dict())
    now = _flat(resolve(copy.deepcopy(cfg)).to_dict())
    if now.get("run.amp") == "auto":  # a run records what auto chose on its machine, and keeps it
        now["run.amp"] = then.get("run.amp")
    return {k: (then.get(k), now.get(k)) for k in sorted(set(then) | set(now)) if then.get(k) != now.get(k)}


def refused_changes(saved: dict, cfg: Config) -> dict[str, tuple]:
    """The differences a resumed run cannot honour."""
    return {k: v for k, v in differences(saved, cfg).items() if not k.startswith(CHANGEABLE_ON_RESUME)}


def check_resume(saved: dict, cfg: Config, run_dir: Path) -> None:
    """Refuse, in one line, settings that differ from those of the checkpoint ``saved`` and cannot
    change mid-run, and fewer epochs than the run has done."""
    if "imported_from" in saved:  # weights without an optimiser state or a position to continue from
        raise ConfigError(f"cannot resume {run_dir}: it was imported (`simsiam import`) and holds weights, not a "
                          "training state; evaluate it (knn, linear, embed) or fine-tune it (finetune)")
    refused = refused_changes(saved["config"], cfg)
    if refused:
        listed = ", ".join(f"{k}={now!r} (the run has {then!r})" for k, (then, now) in refused.items())
        raise ConfigError(f"cannot resume {run_dir} with other settings: {listed}; a resumed run may change only "
                          f"the epochs, the device, logging, checkpointing and monitors -- drop those settings, or "
                          f"start a new run in another --out-dir")
    if cfg.optim.epochs < saved["epoch"]:
        raise ConfigError(f"optim.epochs={cfg.optim.epochs} is fewer than the {saved['epoch']} epochs {run_dir} has "
                          "already done; give at least that many")


def auto_resume(cfg: Config) -> tuple[str, Optional[dict]]:
    """For ``--resume auto``: ``("fresh", None)`` when ``cfg.run.out_dir`` holds no checkpoint,
    ``("resume", saved)`` when it holds an unfinished run of ``cfg``, ``("finished", saved)`` when
    that run is done. A run of other settings is refused (:func:`check_resume`'s line)."""
    path = Path(cfg.run.out_dir) / "checkpoint.pt"
    if not path.exists():
        return "fresh", None
    saved = ckpt_io.load(path, resuming=True)
    refused = refused_changes(saved["config"], cfg)
    if refused:
        listed = ", ".join(f"{k} ({then!r} there, {now!r} here)" for k, (then, now) in list(refused.items())[:4])
        raise ConfigError(f"--resume auto: {cfg.run.out_dir} holds a run of another config: {listed}; give the "
                          "command that started it, or another --out-dir")
    finished = saved["epoch"] >= cfg.optim.epochs and not saved.get("position")
    return ("finished" if finished else "resume"), saved
