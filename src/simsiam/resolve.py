"""A config resolved against the registries: names checked, derived values filled, values validated.

This is the one place that knows both the schema (``config``) and the registries of methods,
datasets, backbones (timm's included) and augmentation recipes; the schema itself imports none of them, so nothing
the registries import can come back round to them.
"""
from __future__ import annotations

import dataclasses

from .augment import RECIPES
from .config import METHOD_DEFAULTS, AugConfig, Config, ConfigError, validate
from .data import DATASETS
from .methods import METHODS
from .models import BACKBONES, CUSTOM_PREFIX
from .models.timm_backbones import is_timm, timm_name_problem


def check_registered(cfg: Config) -> None:
    """Every name the config gives must be a key of its registry; the error lists the keys."""
    for key, value, registry in (
        ("method", cfg.method, METHODS),
        ("data.dataset", cfg.data.dataset, DATASETS),
        ("model.backbone", cfg.model.backbone, BACKBONES),
        ("aug.recipe", cfg.aug.recipe, RECIPES),
    ):
        if key == "model.backbone" and _backbone_outside_registry(value):
            continue
        if value not in registry:
            extra = ", or timm:<any timm model>" if key == "model.backbone" else ""
            raise ConfigError(f"{key}={value!r} is not valid; choose one of: {', '.join(sorted(registry))}{extra}")


def _backbone_outside_registry(name: str) -> bool:
    """A timm model (checked here, so that a typo or a missing timm fails before anything runs), or
    a module given through the Python API (``custom:<class>``)."""
    if is_timm(name):
        problem = timm_name_problem(name)
        if problem:
            raise ConfigError(problem)
        return True
    return name.startswith(CUSTOM_PREFIX)


def resolve(cfg: Config) -> Config:
    """Fill derived values in place (augmentation from its recipe, predictor width d/4, each method's
    own defaults) and validate; returns ``cfg``."""
    check_registered(cfg)
    if isinstance(cfg.run.compile, bool):  # set through the Python API as older versions had it
        cfg.run.compile = "true" if cfg.run.compile else "false"
    validate(cfg)
    recipe = RECIPES[cfg.aug.recipe]
    for f in dataclasses.fields(AugConfig):
        if f.name != "recipe" and getattr(cfg.aug, f.name) is None:
            setattr(cfg.aug, f.name, recipe[f.name])
    if cfg.model.pred_hidden == 0:
        cfg.model.pred_hidden = max(1, cfg.model.dim // 4)
    for name, value in METHOD_DEFAULTS.get(cfg.method, {}).items():
        if getattr(cfg.methods, name) is None:
            setattr(cfg.methods, name, value)
    return cfg
