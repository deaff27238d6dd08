"""Any timm model as a backbone: ``model.backbone=timm:<name>`` (timm is an optional extra).

The model is built without its classifier (``num_classes=0``), so its forward returns the pooled
features ``(B, num_features)`` after the model's own global pooling, and with ``in_chans`` from
the data. Weights are never downloaded: ``pretrained=False`` always (SimSiam trains from scratch;
a run must not depend on the network). Models that need the input size at construction (ViTs)
get ``img_size`` from ``data.image_size``.
"""
from __future__ import annotations

from torch import nn

PREFIX = "timm:"
INSTALL_HINT = "pip install simsiam[timm]"


def is_timm(name: str) -> bool:
    return name.startswith(PREFIX)


def timm_name_problem(name: str) -> str:
    """Why ``model.backbone=name`` (a ``timm:`` name) cannot be built here; "" when it can."""
    model = name[len(PREFIX):]
    try:
        import timm
    except ImportError:
        return f"model.backbone={name!r} needs timm, which is not installed: {INSTALL_HINT}"
    if not timm.is_model(model):
        close = timm.list_models(f"*{model.split('_')[0]}*")[:8]
        return (f"model.backbone={name!r}: timm has no model {model!r}"
                + (f"; similar names: {', '.join(close)}" if close else "; `timm.list_models()` lists them"))
    return ""


def build_timm_backbone(name: str, in_channels: int, image_size: int = 0) -> nn.Module:
    """The timm model ``timm:<model>`` without classifier, randomly initialised, with ``num_features``."""
    problem = timm_name_problem(name)
    if problem:
        raise ValueError(problem)
    import timm

    kwargs = dict(pretrained=False, num_classes=0, in_chans=in_channels)
    model_name = name[len(PREFIX):]
    if image_size:
        try:  # ViT-like models fix their position embeddings to the input size; CNNs take no img_size
            return timm.create_model(model_name, img_size=image_size, **kwargs)
        except TypeError as err:
            if "img_size" not in str(err):
                raise
    return timm.create_model(model_name, **kwargs)
