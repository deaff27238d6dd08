"""A backbone alone: torchvision's ResNet state dict (``--from torchvision``) or a timm model's
(``--from timm:<name>``). The classifier is left out; the heads, which such a file has not, start
at their initialisation (seeded), and the report says so."""
from __future__ import annotations

from ..artifacts.checkpoint import CheckpointError
from ..models.timm_backbones import PREFIX as TIMM_PREFIX
from ..models.timm_backbones import build_timm_backbone
from .layout import Parts, find_state_dict, refuse_unexpected, strip_prefix


def split_torchvision(obj, source: str) -> Parts:
    state, dropped = find_state_dict(obj, source)
    state = strip_prefix(state, "module.")
    for key in [k for k in state if k.startswith("fc.")]:
        dropped[key] = "torchvision's classifier"
        del state[key]
    trunk = {k: state.pop(k) for k in [k for k in state if k.split(".")[0] in ("conv1", "bn1", "layer1", "layer2",
                                                                               "layer3", "layer4")]}
    if "conv1.weight" in trunk:  # else the architecture check says what the file is
        refuse_unexpected(state, source, "torchvision", "a torchvision ResNet's conv1, bn1, layer1-4 and fc")
    else:
        trunk.update(state)
    return Parts(trunk, {}, {}, {"backbone": "the whole file (but fc)"}, dropped)


def split_timm(obj, source: str, fmt: str, image_size: int) -> tuple[Parts, object]:
    """The parts and the timm model (without classifier) whose keys the trunk must have, built with
    the input channels of the file's first convolution."""
    state, dropped = find_state_dict(obj, source)
    state = strip_prefix(state, "module.")
    in_channels = next((int(v.shape[1]) for v in state.values() if v.dim() == 4), 3)
    name = fmt[len(TIMM_PREFIX):]
    model = build_timm_backbone(fmt, in_channels, image_size)
    wanted = model.state_dict()
    classifier = model.pretrained_cfg.get("classifier") or "head"
    classifiers = (classifier,) if isinstance(classifier, str) else tuple(classifier)
    trunk = {k: v for k, v in state.items() if k in wanted}
    heads = {c.split(".")[0] for c in classifiers}
    dropped.update({k: f"timm's classifier ({name})" for k in state if k not in wanted and k.split(".")[0] in heads})
    refuse_unexpected([k for k in state if k not in wanted and k not in dropped], source, fmt,
                      f"the keys of timm's {name}")
    missing = sorted(set(wanted) - set(trunk))
    if missing:
        raise CheckpointError(f"{source}: {len(missing)} key(s) of timm's {name} are not in the file "
                              f"({', '.join(missing[:4])}); is it another model? (its keys start "
                              f"{', '.join(list(state)[:3])})")
    return Parts(trunk, {}, {}, {"backbone": "the whole file (but the classifier)"}, dropped), model
