"""simsiam: SimSiam self-supervised representation learning (Chen & He, CVPR 2021).

Public API::

    from simsiam import Config, get_preset, pretrain, load_pretrained, knn_evaluate
    cfg = get_preset("fmnist")
    result = pretrain(cfg)                 # trains, monitors, checkpoints, plots, report
    model, cfg = load_pretrained(result.run_dir)
    table = finetune(result.run_dir, label_fractions=["1%", "10%"])  # is pretraining worth it?
    classifier, meta, cfg = load_classifier(table["out_dir"] + "/models/finetune-10pct-seed0.pt")
    run = import_checkpoint("checkpoint_0099.pth.tar", "official", "runs/official").run_dir  # others' weights

Where things live: docs/ARCHITECTURE.md.
"""
from .config import Config, ConfigError, apply_overrides
from .config.presets import PRESETS, get_preset
from .downstream import FinetuneRecipe, finetune
from .eval.classifier import load_classifier
from .eval.predict import predict_folder
from .eval.pretrained import knn_evaluate, load_pretrained
from .interop import import_checkpoint
from .resolve import resolve
from .train.pretrain import RunResult, TrainingDiverged, pretrain
from .version import __version__

__all__ = [
    "__version__", "Config", "ConfigError", "apply_overrides", "resolve", "PRESETS", "get_preset",
    "pretrain", "RunResult", "TrainingDiverged", "load_pretrained", "knn_evaluate", "finetune", "FinetuneRecipe",
    "load_classifier", "predict_folder", "import_checkpoint",
]
