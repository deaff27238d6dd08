"""simsiam: SimSiam self-supervised representation learning (Chen & He, CVPR 2021).

Public API::

    from simsiam import Config, get_preset, pretrain, load_pretrained, knn_evaluate
    cfg = get_preset("fmnist")
    result = pretrain(cfg)                 # trains, monitors, checkpoints, plots, report
    model, cfg = load_pretrained(result.run_dir)

Where things live: docs/ARCHITECTURE.md.
"""
from .config import Config, ConfigError, apply_overrides
from .config.presets import PRESETS, get_preset
from .eval.pretrained import knn_evaluate, load_pretrained
from .resolve import resolve
from .train.pretrain import RunResult, TrainingDiverged, pretrain
from .version import __version__

__all__ = [
    "__version__", "Config", "ConfigError", "apply_overrides", "resolve", "PRESETS", "get_preset",
    "pretrain", "RunResult", "TrainingDiverged", "load_pretrained", "knn_evaluate",
]
