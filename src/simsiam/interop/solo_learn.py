"""solo-learn's SimSiam (``solo/methods/simsiam.py``), from its public code's layout.

A Lightning checkpoint: the method's ``state_dict`` holds ``backbone.*`` (a torchvision ResNet,
``fc`` an Identity; the CIFAR variant a 3x3 stride-1 conv1 and no max-pool), ``projector.*``
(Linear-BN-ReLU twice, Linear with a bias never trained, BN without affine), ``predictor.*``
(Linear-BN-ReLU, Linear) and ``classifier.*``, the online linear classifier trained on the labels
alongside, which is left out. Lightning's other entries (optimiser states, loops) are not weights.
"""
from __future__ import annotations

from .layout import Parts, find_state_dict, refuse_unexpected, strip_prefix, take

EXPECTED = "backbone.*, projector.*, predictor.* and classifier.*"


def split(obj, source: str) -> Parts:
    state, dropped = find_state_dict(obj, source)
    state = strip_prefix(state, "module.")
    trunk = take(state, "backbone.")
    projector = take(state, "projector.")
    predictor = take(state, "predictor.")
    for key in take(state, "classifier."):
        dropped["classifier." + key] = "solo-learn's online linear classifier (trained on labels)"
    for key in [k for k in trunk if k.startswith("fc.")]:
        dropped["backbone." + key] = "the backbone's classifier"
        del trunk[key]
    refuse_unexpected(state, source, "solo-learn", EXPECTED)
    meta = {"epoch": obj["epoch"]} if isinstance(obj, dict) and isinstance(obj.get("epoch"), int) else {}
    origin = {"backbone": "backbone.*", "projector": "projector.*", "predictor": "predictor.*"}
    return Parts(trunk, projector, predictor, origin, dropped, meta)
