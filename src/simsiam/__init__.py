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

The names are imported on first use (PEP 562): ``import simsiam`` alone does not import torch, so
the command line sets its Ctrl-C handling (``cli.main``) before the seconds that torch takes, and
a Ctrl-C during them ends it with one line instead of a traceback.
"""
from __future__ import annotations

import importlib
import importlib.util

from .version import __version__

# public name -> the module (relative to this package) that defines it
_WHERE = {
    "Config": ".config", "ConfigError": ".config", "apply_overrides": ".config",
    "PRESETS": ".config.presets", "get_preset": ".config.presets",
    "FinetuneRecipe": ".downstream", "finetune": ".downstream",
    "load_classifier": ".eval.classifier",
    "predict_folder": ".eval.predict",
    "knn_evaluate": ".eval.pretrained", "load_pretrained": ".eval.pretrained",
    "import_checkpoint": ".interop",
    "resolve": ".resolve",
    "RunResult": ".train.pretrain", "TrainingDiverged": ".train.pretrain", "pretrain": ".train.pretrain",
}

__all__ = ["__version__", *_WHERE]


def __getattr__(name: str):
    if name not in _WHERE:
        if not name.startswith("_") and importlib.util.find_spec(f"{__name__}.{name}") is not None:
            return importlib.import_module(f"{__name__}.{name}")  # ``simsiam.data`` as when all was imported
        raise AttributeError(f"module 'simsiam' has no attribute {name!r}")
    value = getattr(importlib.import_module(_WHERE[name], __name__), name)
    globals()[name] = value  # found once; later lookups do not come here
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_WHERE))
