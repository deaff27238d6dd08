"""Optimisation: the lr rule and cosine schedule, the pretraining optimiser (SGD or LARS), LARS itself."""
from .build import build_optimizer
from .lars import LARS, build_lars, lars_param_groups
from .schedule import cosine_lr, scaled_lr, set_lr

__all__ = ["build_optimizer", "LARS", "build_lars", "lars_param_groups", "cosine_lr", "scaled_lr", "set_lr"]
