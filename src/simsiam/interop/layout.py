"""What every source format shares: the state dict found in a file, a ResNet trunk and the MLP heads
read from their tensors, and the refusals worded once.

A source module (official.py, lightly.py, ...) sorts a file's tensors into :class:`Parts` under
the names its format uses; the architecture is then read from the tensors here -- the ResNet's
block, depth, stem, width and input channels; each head's layer count, widths and where BN goes
-- never assumed from a format's defaults.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

import torch
from torch import Tensor

from ..artifacts.checkpoint import CheckpointError
from ..models import BACKBONES

# Where a file keeps its state dict when it is not the file itself (Lightning: "state_dict").
STATE_DICT_ENTRIES = ("state_dict", "model", "model_state_dict", "state")


@dataclass
class Parts:
    """A file's tensors sorted by what they are, under the names its format gives them."""

    trunk: dict[str, Tensor]  # torchvision ResNet names (conv1.weight, layer1.0.bn1.weight ...) or timm's
    projector: dict[str, Tensor]  # nn.Sequential indices: "0.weight", "1.running_mean" ...
    predictor: dict[str, Tensor]
    origin: dict[str, str]  # part -> where it was in the file, for the report ("module.encoder.fc.*")
    dropped: dict[str, str] = field(default_factory=dict)  # what is not imported -> why
    meta: dict = field(default_factory=dict)  # what the file says of itself: epoch, arch


@dataclass
class Head:
    """An MLP head as its tensors describe it (models/heads.py's ``mlp`` builds the same layout)."""

    layers: int
    in_dim: int
    hidden: int
    out_dim: int
    bn_out: bool
    out_affine: bool


def is_tensor_dict(obj) -> bool:
    return isinstance(obj, dict) and bool(obj) and all(isinstance(v, Tensor) for v in obj.values())


def find_state_dict(obj, source: str) -> tuple[dict[str, Tensor], dict[str, str]]:
    """The file's state dict (the file itself, or one of :data:`STATE_DICT_ENTRIES`) and the other
    top-level entries, each with why it is left out."""
    if is_tensor_dict(obj):
        return dict(obj), {}
    if isinstance(obj, dict):
        for entry in STATE_DICT_ENTRIES:
            if is_tensor_dict(obj.get(entry)):
                others = {str(k): "not weights (training state or metadata)" for k in obj if k != entry}
                return dict(obj[entry]), others
    raise CheckpointError(f"{source}: holds no state dict (a dict of tensors) at its top level or under "
                          f"{', '.join(repr(e) for e in STATE_DICT_ENTRIES)}; is it a model checkpoint?")


def strip_prefix(state: dict[str, Tensor], prefix: str) -> dict[str, Tensor]:
    """Keys without ``prefix`` when every key has it (DDP's ``module.``), else the state as it is."""
    if state and all(k.startswith(prefix) for k in state):
        return {k[len(prefix):]: v for k, v in state.items()}
    return state


def take(state: dict[str, Tensor], prefix: str) -> dict[str, Tensor]:
    """The entries under ``prefix``, the prefix removed (and removed from ``state``)."""
    part = {k[len(prefix):]: state.pop(k) for k in [k for k in state if k.startswith(prefix)]}
    return part


def refuse_unexpected(keys, source: str, fmt: str, expected: str) -> None:
    keys = sorted(keys)
    if keys:
        shown = ", ".join(keys[:4]) + (f" and {len(keys) - 4} more" if len(keys) > 4 else "")
        raise CheckpointError(f"{source}: {len(keys)} unexpected key(s) for --from {fmt} ({shown}), which expects "
                              f"{expected}; is the file of another format or method?")


def describe_architecture(keys) -> str:
    """What a state dict's keys look like, in words, for the line that refuses it."""
    keys = list(keys)
    if any(re.search(r"(^|\.)(patch_embed|cls_token|class_token|conv_proj|pos_embed)(\.|$)", k) for k in keys):
        return "a Vision Transformer (patch embedding, class token, transformer blocks)"
    if any(re.search(r"(^|\.)layer[1-4]\.\d+\.", k) for k in keys):
        return "a ResNet under other names"
    return f"no ResNet keys (it starts {', '.join(keys[:3])})" if keys else "no tensors"


# (block, blocks per stage) -> depth: the torchvision ResNets.
_DEPTHS = {("basic", (2, 2, 2, 2)): 18, ("basic", (3, 4, 6, 3)): 34, ("bottleneck", (3, 4, 6, 3)): 50,
           ("bottleneck", (3, 4, 23, 3)): 101, ("bottleneck", (3, 8, 36, 3)): 152}


def resnet_backbone(trunk: dict[str, Tensor], source: str, fmt: str) -> tuple[str, int, int, str]:
    """``(backbone name, width, input channels, a line on what was read)`` from a torchvision-named trunk."""
    if "conv1.weight" not in trunk or not any(k.startswith("layer4.") for k in trunk):
        raise CheckpointError(f"{source}: found {describe_architecture(trunk)}, where --from {fmt} expects a ResNet "
                              "(conv1.weight, layer1-4.*); a timm model of another kind imports with "
                              "--from timm:<name>")
    conv1 = trunk["conv1.weight"]  # (width, in_channels, k, k)
    block = "bottleneck" if "layer1.0.conv3.weight" in trunk else "basic"
    counts = tuple(1 + max((int(m.group(1)) for k in trunk if (m := re.match(rf"layer{i}\.(\d+)\.", k))), default=-1)
                   for i in range(1, 5))
    stem = {7: "imagenet", 3: "cifar"}.get(int(conv1.shape[-1]))
    depth = _DEPTHS.get((block, counts))
    name = None if depth is None or stem is None else f"resnet{depth}" + ("" if stem == "imagenet" else "_cifar")
    said = (f"ResNet-{depth or '?'} ({block} blocks {list(counts)}), {conv1.shape[-1]}x{conv1.shape[-1]} conv1 "
            f"({'ImageNet' if stem == 'imagenet' else 'CIFAR'} stem), width {conv1.shape[0]}, {conv1.shape[1]} "
            "input channel(s)")
    if name not in BACKBONES:
        raise CheckpointError(f"{source}: the file holds a {said}; no built-in backbone has that shape (built in: "
                              f"{', '.join(sorted(BACKBONES))})")
    return name, int(conv1.shape[0]), int(conv1.shape[1]), said


def read_head(part: dict[str, Tensor], role: str, where: str, source: str) -> Head:
    """The MLP a head's tensors describe: Linear-BN-ReLU blocks, then a Linear with an optional BN
    (the layout of the official code, lightly, solo-learn and models/heads.py alike)."""
    indices = sorted({int(k.split(".")[0]) for k in part if k.split(".")[0].isdigit()})
    linears = [i for i in indices if part.get(f"{i}.weight") is not None and part[f"{i}.weight"].dim() == 2]
    norms = [i for i in indices if f"{i}.running_mean" in part]
    expected_linears = [3 * j for j in range(len(linears))]
    layout_ok = (linears == expected_linears and len(linears) >= 1 and set(indices) == set(linears) | set(norms)
                 and all(i + 1 in norms for i in linears[:-1]) and all(n - 1 in linears for n in norms)
                 and len(part) == sum(1 for k in part if k.split(".")[0].isdigit()))
    if not layout_ok:
        found = ", ".join(sorted(part)[:6])
        raise CheckpointError(f"{source}: the {role} ({where}) is not laid out as Linear-BN-ReLU blocks then a Linear "
                              f"(with an optional BN); found {found}")
    weights = [part[f"{i}.weight"] for i in linears]
    hidden = {int(w.shape[0]) for w in weights[:-1]}
    if len(hidden) > 1 or any(int(b.shape[1]) != int(a.shape[0]) for a, b in zip(weights, weights[1:])):
        shapes = ", ".join(str(tuple(w.shape)) for w in weights)
        raise CheckpointError(f"{source}: the {role}'s layers ({where}) do not chain with one hidden width: {shapes}")
    last = linears[-1]
    return Head(layers=len(linears), in_dim=int(weights[0].shape[1]), hidden=hidden.pop() if hidden else
                int(weights[-1].shape[0]), out_dim=int(weights[-1].shape[0]), bn_out=last + 1 in norms,
                out_affine=f"{last + 1}.weight" in part)


def head_tensors(part: dict[str, Tensor], role: str, head: Head, notes: list[str]) -> dict[str, Tensor]:
    """The head's tensors under this package's names (``role.i.*``), made to fit models/heads.py's
    ``mlp``, each change exact and said in ``notes``: a Linear's bias before a BN is folded into the
    BN's running mean (BN subtracts the batch mean, so the bias never mattered in training; in
    eval, (Wx + b - mean) equals (Wx - (mean - b))); a hidden BN without affine gets weight 1 and
    bias 0 (the identity it was); a BN without its batch counter gets 0."""
    out = {f"{role}.{k}": v.clone() for k, v in part.items()}
    for j in range(head.layers):
        i = 3 * j
        bias = out.get(f"{role}.{i}.bias")
        has_norm = f"{role}.{i + 1}.running_mean" in out
        if bias is not None and has_norm:
            out[f"{role}.{i + 1}.running_mean"] = out[f"{role}.{i + 1}.running_mean"] - bias
            del out[f"{role}.{i}.bias"]
            notes.append(f"{role} layer {i}'s bias folded into BN {i + 1}'s running mean (exact: BN removes it)")
        if has_norm:
            norm = f"{role}.{i + 1}"
            channels = out[f"{norm}.running_mean"].shape
            if f"{norm}.num_batches_tracked" not in out:
                out[f"{norm}.num_batches_tracked"] = torch.tensor(0)
            if f"{norm}.weight" not in out and j < head.layers - 1:
                out[f"{norm}.weight"], out[f"{norm}.bias"] = torch.ones(channels), torch.zeros(channels)
                notes.append(f"{role} BN {i + 1} without affine: weight 1, bias 0 (the same function)")
    last = f"{role}.{3 * (head.layers - 1)}"
    if not head.bn_out and f"{last}.bias" not in out:
        out[f"{last}.bias"] = torch.zeros(out[f"{last}.weight"].shape[0])
        notes.append(f"{role}'s output layer without bias: bias 0 (the same function)")
    return out
