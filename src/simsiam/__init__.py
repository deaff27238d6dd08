"""simsiam: SimSiam self-supervised representation learning (Chen & He, CVPR 2021).

Public API::

    from simsiam import Config, get_preset, pretrain, load_pretrained, knn_evaluate
    cfg = get_preset("fmnist")
    result = pretrain(cfg)                 # trains, monitors, checkpoints, plots, report
    model, cfg = load_pretrained(result.run_dir)
"""
__version__ = "0.1.0"

from .config import Config, ConfigError, apply_overrides, resolve  # noqa: E402
from .presets import PRESETS, get_preset  # noqa: E402
from .train import RunResult, TrainingDiverged, pretrain  # noqa: E402
from .pretrained import knn_evaluate, load_pretrained  # noqa: E402

__all__ = [
    "__version__", "Config", "ConfigError", "apply_overrides", "resolve", "PRESETS", "get_preset",
    "pretrain", "RunResult", "TrainingDiverged", "load_pretrained", "knn_evaluate",
]
