"""lightly's SimSiam (``lightly.models.modules``), from its documented example and heads.

The model is ``backbone`` (a torchvision ResNet without ``fc``: either the ResNet with
``fc = Identity``, named as torchvision names it, or ``nn.Sequential(*children[:-1])``, whose
indices 0, 1, 4-7 are conv1, bn1, layer1-4), ``projection_head.layers.*`` (SimSiamProjectionHead:
Linear-BN-ReLU twice, then Linear-BN; the output BN has affine in older releases, none in newer)
and ``prediction_head.layers.*`` (Linear-BN-ReLU, Linear). A Lightning checkpoint keeps the same
keys under ``state_dict``, after the LightningModule's attribute name when the model is one.
"""
from __future__ import annotations

import re

from ..artifacts.checkpoint import CheckpointError
from .layout import Parts, find_state_dict, refuse_unexpected, take

EXPECTED = "backbone.*, projection_head.layers.* and prediction_head.layers.*"
# nn.Sequential(*resnet.children()[:-1]): the children with tensors, by index.
SEQUENTIAL_NAMES = {"0": "conv1", "1": "bn1", "4": "layer1", "5": "layer2", "6": "layer3", "7": "layer4"}


def split(obj, source: str) -> Parts:
    state, dropped = find_state_dict(obj, source)
    first = next((k for k in state if k.startswith("backbone.") or ".backbone." in k), None)
    if first is None:
        raise CheckpointError(f"{source}: no backbone.* tensors, where --from lightly expects {EXPECTED}")
    prefix = first[:first.index("backbone.")]  # "" or the LightningModule's attribute ("model.")
    if not all(k.startswith(prefix) for k in state):
        refuse_unexpected([k for k in state if not k.startswith(prefix)], source, "lightly", EXPECTED)
    state = {k[len(prefix):]: v for k, v in state.items()}
    backbone = take(state, "backbone.")
    projector = take(state, "projection_head.layers.")
    predictor = take(state, "prediction_head.layers.")
    refuse_unexpected((prefix + k for k in state), source, "lightly", EXPECTED)
    if not projector:
        raise CheckpointError(f"{source}: found {prefix}backbone.* but no {prefix}projection_head.layers.*: a lightly "
                              "SimSiam checkpoint holds its projection head (SimSiamProjectionHead) beside the "
                              "backbone; for a backbone alone use --from torchvision")
    trunk = {}
    for key, value in backbone.items():
        head, _, rest = key.partition(".")
        if head in SEQUENTIAL_NAMES:
            trunk[f"{SEQUENTIAL_NAMES[head]}.{rest}"] = value
        elif re.fullmatch(r"\d+", head):
            refuse_unexpected([prefix + "backbone." + key], source, "lightly", "a ResNet's children 0, 1, 4-7 "
                              "under backbone.")
        elif head == "fc":
            dropped[prefix + "backbone." + key] = "the backbone's classifier"
        else:
            trunk[key] = value
    origin = {"backbone": f"{prefix}backbone.*", "projector": f"{prefix}projection_head.layers.*",
              "predictor": f"{prefix}prediction_head.layers.*"}
    return Parts(trunk, projector, predictor, origin, dropped)
