"""The official release (facebookresearch/simsiam, ``main_simsiam.py``), from its public description.

The file is ``{"epoch", "arch", "state_dict", "optimizer"}``. The state dict is the DDP-wrapped
model's, so every key starts ``module.``: ``module.encoder.*`` is torchvision's ResNet with its
``fc`` replaced by the projector (an ``nn.Sequential``: Linear-BN-ReLU twice, then Linear, then a
BN without affine; that Linear keeps a bias that is never trained), ``module.predictor.*`` the
predictor (Linear-BN-ReLU, Linear). ``arch`` is checked against the tensors, which decide.
"""
from __future__ import annotations

from .layout import Parts, find_state_dict, refuse_unexpected, strip_prefix, take

EXPECTED = "module.encoder.* (a torchvision ResNet, its fc the projector) and module.predictor.*"


def split(obj, source: str) -> Parts:
    state, dropped = find_state_dict(obj, source)
    wrapped = all(k.startswith("module.") for k in state)
    state = strip_prefix(state, "module.")
    prefix = "module." if wrapped else ""
    projector = take(state, "encoder.fc.")
    trunk = take(state, "encoder.")
    predictor = take(state, "predictor.")
    refuse_unexpected((prefix + k for k in state), source, "official", EXPECTED)
    meta = {k: obj[k] for k in ("epoch", "arch") if isinstance(obj, dict) and k in obj}
    origin = {"backbone": f"{prefix}encoder.* (but fc)", "projector": f"{prefix}encoder.fc.*",
              "predictor": f"{prefix}predictor.*"}
    return Parts(trunk, projector, predictor, origin, dropped, meta)
