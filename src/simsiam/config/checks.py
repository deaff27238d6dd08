"""Checks of a config's values that need nothing but the schema: ranges, vocabularies, and
switches that the chosen method would silently ignore."""
from __future__ import annotations

import dataclasses
import math
import re

from .schema import CHOICES, LIST_CHOICES, METHOD_DEFAULTS, Config, ConfigError

NO_BUDGET = "optim.epochs=0 needs a budget: set optim.budget_images=N (images seen) or optim.epochs=N"


def validate(cfg: Config) -> Config:
    """Values out of range, closed vocabularies, and switches the chosen method would ignore.

    Names that live in registries (method, dataset, backbone, augmentation recipe) are checked by
    ``simsiam.resolve``, which knows the registries; this module knows only the schema."""
    _check_finite(cfg)
    _check_ranges(cfg)
    for key, allowed in CHOICES.items():
        section, name = key.split(".")
        value = getattr(getattr(cfg, section), name)
        if value not in allowed:
            raise ConfigError(f"{key}={value!r} is not valid; choose one of: {', '.join(allowed)}")
    for key, allowed in LIST_CHOICES.items():
        section, name = key.split(".")
        wrong = [v for v in getattr(getattr(cfg, section), name) if v not in allowed]
        if wrong:
            raise ConfigError(f"{key}: {', '.join(map(repr, wrong))} not valid; choose any of: {', '.join(allowed)}")
    positive = {
        "optim.batch_size": cfg.optim.batch_size,
        "model.dim": cfg.model.dim,
        "model.width": cfg.model.width,
        "monitor.knn_k": cfg.monitor.knn_k,
    }
    for key, value in positive.items():
        if value <= 0:
            raise ConfigError(f"{key} must be positive, got {value}")
    # 0 is "chosen for the data" (train/budget.py): epochs from optim.budget_images, about 5 monitor points
    for key, value in {"optim.epochs": cfg.optim.epochs, "optim.budget_images": cfg.optim.budget_images,
                       "monitor.every": cfg.monitor.every}.items():
        if value < 0:
            raise ConfigError(f"{key} must be positive (or 0: chosen for the data), got {value}")
    if cfg.optim.epochs == 0 and cfg.optim.budget_images == 0:
        raise ConfigError(NO_BUDGET)
    if cfg.model.proj_layers < 1:
        raise ConfigError(f"model.proj_layers must be at least 1, got {cfg.model.proj_layers}")
    _check_hypothesis(cfg)
    _check_methods(cfg)
    return cfg


def _numbers(cfg: Config):
    """``(dotted key, value)`` of every number in the config."""
    for section in dataclasses.fields(cfg):
        part = getattr(cfg, section.name)
        if not dataclasses.is_dataclass(part):
            continue
        for f in dataclasses.fields(part):
            value = getattr(part, f.name)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                yield f"{section.name}.{f.name}", value


def _check_finite(cfg: Config) -> None:
    """NaN or inf anywhere would surface steps later as a NaN loss (or never): refuse it now."""
    for key, value in _numbers(cfg):
        if not math.isfinite(value):
            raise ConfigError(f"{key}={value} is not a finite number; give a real value")


def _check_ranges(cfg: Config) -> None:
    """Values torch would reject deep inside (naming neither the key nor the value), or accept and
    misbehave on; checked here with the key's name."""
    o, r, d = cfg.optim, cfg.run, cfg.data
    non_negative = {"optim.base_lr": o.base_lr, "optim.weight_decay": o.weight_decay, "optim.momentum": o.momentum,
                    "optim.warmup_epochs": o.warmup_epochs, "run.checkpoint_every_steps": r.checkpoint_every_steps,
                    "run.checkpoint_every_minutes": r.checkpoint_every_minutes,
                    "run.epoch_checkpoint_minutes": r.epoch_checkpoint_minutes,
                    "run.keep_checkpoints": r.keep_checkpoints, "run.threads": r.threads, "data.train_limit": d.train_limit,
                    "data.eval_limit": d.eval_limit, "monitor.knn_t": cfg.monitor.knn_t}
    for key, value in non_negative.items():
        if value < 0:
            raise ConfigError(f"{key} must not be negative, got {value}")
    if cfg.monitor.knn_t == 0:
        raise ConfigError("monitor.knn_t must be positive (the kNN softmax temperature), got 0")
    if r.log_every <= 0:
        raise ConfigError(f"run.log_every must be positive, got {r.log_every}")
    if not (r.device in ("auto", "cpu", "cuda") or re.fullmatch(r"cuda:\d+", r.device)):
        raise ConfigError(f"run.device={r.device!r} is not a device; choose auto, cpu, cuda or cuda:N")


def _check_hypothesis(cfg: Config) -> None:
    """A section-5 field set without the method that reads it would be silently ignored: refuse it."""
    h = cfg.hypothesis
    if (h.kstep != 0) != (cfg.method == "simsiam_kstep"):
        raise ConfigError(f"hypothesis.kstep={h.kstep} with method={cfg.method!r}: the k-step alternation is "
                          "method=simsiam_kstep with hypothesis.kstep=K (K >= 1, or -1 for one epoch)")
    if h.kstep < -1:
        raise ConfigError(f"hypothesis.kstep must be >= 1, or -1 for one epoch, got {h.kstep}")
    if h.ema_m != 0 and cfg.method != "simsiam_ema":
        raise ConfigError(f"hypothesis.ema_m={h.ema_m} is read only by method=simsiam_ema (set it too)")
    if not 0 <= h.ema_m < 1:
        raise ConfigError(f"hypothesis.ema_m must be in [0, 1), got {h.ema_m}")


def _check_methods(cfg: Config) -> None:
    """Section-6 switches that the chosen method would silently ignore, and values out of range."""
    m = cfg.methods
    own = METHOD_DEFAULTS.get(cfg.method, {})
    stop_grad = m.stop_grad if m.stop_grad is not None else own.get("stop_grad")
    momentum = m.momentum if m.momentum is not None else own.get("momentum")
    for name in ("temperature", "momentum", "stop_grad"):
        if getattr(m, name) is not None and name not in own:
            users = "/".join(k for k, v in METHOD_DEFAULTS.items() if name in v)
            raise ConfigError(f"methods.{name} is read only by method={users}, not by method={cfg.method!r}")
    if m.predictor and cfg.method not in ("simclr", "swav"):
        raise ConfigError(f"methods.predictor=true is the SimCLR/SwAV cross-ablation (section 6.2); method="
                          f"{cfg.method!r} " + ("has none to add" if cfg.method == "moco" else
                                                "always has its predictor"))
    if cfg.method == "byol" and stop_grad is False and momentum:
        raise ConfigError("methods.stop_grad=false for BYOL needs methods.momentum=0: a momentum target "
                          "never receives a gradient")
    if m.temperature is not None and m.temperature <= 0:
        raise ConfigError(f"methods.temperature must be positive, got {m.temperature}")
    if m.momentum is not None and not 0 <= m.momentum < 1:
        raise ConfigError(f"methods.momentum must be in [0, 1), got {m.momentum}")
    for key, value in (("moco_queue", m.moco_queue), ("swav_prototypes", m.swav_prototypes),
                       ("sinkhorn_iters", m.sinkhorn_iters)):
        if value < 1:
            raise ConfigError(f"methods.{key} must be at least 1, got {value}")
    if m.sinkhorn_eps <= 0 or m.swav_queue < 0 or m.swav_freeze_prototypes_epochs < 0:
        raise ConfigError(f"methods.sinkhorn_eps must be positive and methods.swav_queue, "
                          f"methods.swav_freeze_prototypes_epochs non-negative; got {m.sinkhorn_eps}, "
                          f"{m.swav_queue}, {m.swav_freeze_prototypes_epochs}")
