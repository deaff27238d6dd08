"""Export a pretrained backbone for other libraries (paper, section 6.1: transfer to detection).

* ``torchvision``: the backbone's state dict, a plain dict of tensors written with ``torch.save``.
  A standard backbone (width 64, 3 channels, ImageNet stem) loads into
  ``torchvision.models.resnet18/34/50()`` with ``strict=False``, only ``fc.weight``/``fc.bias`` missing.
* ``safetensors``: the same tensors (or, with ``include_heads``, the whole model) as safetensors.
* ``detectron2``: keys renamed to detectron2's ResNet names (``stem.conv1``, ``res2.0.conv1.norm``,
  ``res2.0.shortcut`` ...) in ``{"model": ..., "__author__": "simsiam", "matching_heuristics": True}``,
  a torch file that detectron2's ``DetectionCheckpointer`` reads (``MODEL.WEIGHTS``).
* ``hf``: a pretrained folder in the Hugging Face convention (``model.safetensors``, ``config.json``, a
  model card), which ``load_pretrained`` and every evaluation command read back (``export_hf.py``).
* ``onnx``: the backbone (with ``include_heads``, backbone + projector) as an ONNX graph with a
  dynamic batch axis (``export_onnx.py``), for onnxruntime and every other ONNX runtime.

Every file is written atomically: a crash leaves no half-written export.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from ..artifacts.checkpoint import save_atomic, write_atomic
from ..config import Config
from ..models import BACKBONES, TORCHVISION_EQUIVALENT, input_channels
from .classifier import Classifier, classifier_head
from .export_onnx import export_onnx, onnxruntime_how_to
from .normalisation import training_normalisation
from .pretrained import load_pretrained

FORMATS = ("torchvision", "safetensors", "detectron2", "onnx", "hf")


@dataclass
class ExportResult:
    path: Path
    format: str
    num_tensors: int
    warnings: list[str] = field(default_factory=list)
    how_to_load: str = ""


def backbone_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The backbone's parameters and buffers (BN running statistics included), on CPU, contiguous."""
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in model.backbone.state_dict().items()}


# ------------------------------------------------------------------------------------------ torchvision


def torchvision_mismatches(cfg: Config, in_channels: int) -> list[str]:
    """Why the stock torchvision constructor would not take this backbone as it is ([] when it would)."""
    m = cfg.model
    reasons = []
    stem = _stem(cfg)
    if stem == "cifar":
        reasons.append(f"backbone {m.backbone!r} has the CIFAR stem (3x3 stride-1 conv1, no max-pool)")
    elif stem == "small":
        reasons.append(f"backbone {m.backbone!r} has the small stem (3x3 stride-1 conv1, 2x2 max-pool)")
    if m.width != 64:
        reasons.append(f"width {m.width} (torchvision's ResNets have width 64)")
    if in_channels != 3:
        reasons.append(f"{in_channels} input channel(s) (torchvision's ResNets take 3)")
    if m.pool_grid != 1:
        reasons.append(f"pool grid {m.pool_grid}x{m.pool_grid} (torchvision's ResNets average the last stage to 1x1)")
    if m.feature_stages != 1:
        reasons.append(f"features from the last {m.feature_stages} stages (torchvision's forward gives the last "
                       "stage's only)")
    return reasons


def _stem(cfg: Config) -> str:
    """"imagenet", "cifar" or "small": the part of a built-in backbone's name after the depth."""
    if cfg.model.backbone in TORCHVISION_EQUIVALENT:
        return "imagenet"
    return cfg.model.backbone.partition("_")[2]


def _torchvision_constructor(cfg: Config) -> str:
    """The torchvision ResNet of the same depth and blocks: ``resnet18_small`` -> ``resnet18``."""
    return TORCHVISION_EQUIVALENT.get(cfg.model.backbone, cfg.model.backbone.partition("_")[0])


def torchvision_how_to_load(backbone: nn.Module, cfg: Config, path: Path, num_classes: int = 0,
                            load_expr: str = "") -> str:
    """Python lines that build a matching torchvision model and load the export (runnable as they are).

    A standard backbone needs only the stock constructor. Otherwise the lines rebuild what differs
    with torchvision's own parts: the stem (CIFAR: 3x3 stride-1 conv, no max-pool; small: the same
    conv, a 2x2 max-pool; other channel counts), for another width the four stages through
    torchvision's ``ResNet._make_layer``, the pooling grid, and for features from several stages a
    ``features(x)`` function (torchvision's forward gives the last stage's only). A fine-tuned
    classifier (``num_classes``) is the export's ``fc``, so the file loads with nothing missing.
    ``load_expr``: the state dict as the lines get it (default: ``torch.load`` of ``path``).
    """
    ctor = _torchvision_constructor(cfg)
    width = cfg.model.width
    in_channels = backbone.conv1.in_channels
    grid = cfg.model.pool_grid
    stem = _stem(cfg)
    lines = ["import torch, torchvision", f"model = torchvision.models.{ctor}()"]
    if stem != "imagenet":
        lines.append(f"model.conv1 = torch.nn.Conv2d({in_channels}, {width}, kernel_size=3, stride=1, padding=1, "
                     f"bias=False)  # {stem} stem")
        lines.append("model.maxpool = torch.nn.Identity()" if stem == "cifar"
                     else "model.maxpool = torch.nn.MaxPool2d(kernel_size=2, stride=2)")
    elif in_channels != 3 or width != 64:
        lines.append(f"model.conv1 = torch.nn.Conv2d({in_channels}, {width}, kernel_size=7, stride=2, padding=3, "
                     "bias=False)")
    if width != 64:
        block = type(backbone.layer1[0]).__name__  # BasicBlock or Bottleneck, torchvision's own classes
        lines += [f"# width {width}: the stock constructor has width 64; rebuild the stages with torchvision's "
                  "own builder", f"from torchvision.models.resnet import {block}",
                  f"model.bn1, model.inplanes = torch.nn.BatchNorm2d({width}), {width}"]
        for i in range(1, 5):
            blocks = len(getattr(backbone, f"layer{i}"))
            lines.append(f"model.layer{i} = model._make_layer({block}, {width * 2 ** (i - 1)}, {blocks}, "
                         f"stride={1 if i == 1 else 2})")
    if grid != 1:
        # torchvision's forward flattens whatever avgpool leaves, so the grid's cells come out in the
        # same order as this package's backbone gives them.
        lines.append(f"model.avgpool = torch.nn.AdaptiveAvgPool2d(({grid}, {grid}))  # the run's pool grid")
    grids = getattr(backbone, "feature_grids", [(4, grid)])
    last_stage_features = width * 8 * backbone.layer4[-1].expansion * grid * grid
    if num_classes:
        lines.append(f"model.fc = torch.nn.Linear({backbone.num_features}, {num_classes})  # the fine-tuned classifier")
    elif width != 64 or grid != 1:
        lines.append(f"model.fc = torch.nn.Linear({last_stage_features}, 1000)")
    load_expr = load_expr or f"torch.load({str(path)!r}, weights_only=True)"
    lines.append(f"missing, unexpected = model.load_state_dict({load_expr}, strict=False)")
    lines.append("# missing == []: model(x) gives the class logits" if num_classes and len(grids) == 1 else
                 "# missing == []: model.fc(features(x)) gives the class logits (features below)" if num_classes else
                 "# missing == ['fc.weight', 'fc.bias']: add your own head, or model.fc = torch.nn.Identity() "
                 "for the pooled features")
    if len(grids) > 1:
        # torchvision's forward stops at the last stage; the run's features need the earlier ones too.
        lines += ["# model(x) gives the last stage's features only; features(x), in eval mode, gives the run's",
                  f"def features(x):  # the run's features: stage, grid side = {grids}, concatenated",
                  "    x = model.maxpool(model.relu(model.bn1(model.conv1(x))))",
                  "    maps = []",
                  "    for layer in (model.layer1, model.layer2, model.layer3, model.layer4):",
                  "        x = layer(x)",
                  "        maps.append(x)",
                  "    return torch.cat([torch.flatten(torch.nn.functional.adaptive_avg_pool2d(maps[stage - 1], side), 1)",
                  f"                      for stage, side in {grids}], 1)"]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------ detectron2

_STAGE = re.compile(r"^layer([1-4])\.(\d+)\.(.*)$")


def detectron2_key(key: str) -> str:
    """torchvision ResNet name -> detectron2 ResNet name.

    conv1 -> stem.conv1, bn1 -> stem.conv1.norm, layerN.i -> res{N+1}.i, (in a block) bnK -> convK.norm,
    downsample.0 -> shortcut, downsample.1 -> shortcut.norm. Parameter suffixes (weight, bias,
    running_mean, running_var) are kept.
    """
    if key.startswith("conv1."):
        return "stem.conv1." + key[len("conv1."):]
    if key.startswith("bn1."):
        return "stem.conv1.norm." + key[len("bn1."):]
    match = _STAGE.match(key)
    if not match:
        raise ValueError(f"cannot map {key!r} to detectron2's ResNet names: not a torchvision ResNet trunk key")
    stage, block, rest = match.groups()
    rest = re.sub(r"^bn(\d)\.", r"conv\1.norm.", rest)
    rest = re.sub(r"^downsample\.0\.", "shortcut.", rest)
    rest = re.sub(r"^downsample\.1\.", "shortcut.norm.", rest)
    return f"res{int(stage) + 1}.{block}.{rest}"


def to_detectron2(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Renamed tensors; BN batch counters dropped (detectron2's frozen BN has none; they are not weights)."""
    return {detectron2_key(k): v for k, v in state.items() if not k.endswith("num_batches_tracked")}


def detectron2_how_to_load(cfg: Config, path: Path, mean, std) -> str:
    depth = {"resnet18": 18, "resnet34": 34, "resnet50": 50}.get(_torchvision_constructor(cfg), 50)
    res2 = "" if depth >= 50 else " MODEL.RESNETS.RES2_OUT_CHANNELS 64"
    px_mean = [round(255 * m, 3) for m in mean]
    px_std = [round(255 * s, 3) for s in std]
    return (f"detectron2 config: MODEL.WEIGHTS {path} MODEL.RESNETS.DEPTH {depth}{res2} "
            f"MODEL.RESNETS.STRIDE_IN_1X1 False (torchvision puts the stride in the 3x3 conv) "
            f"INPUT.FORMAT {'RGB' if len(mean) == 3 else 'L'} MODEL.PIXEL_MEAN {px_mean} MODEL.PIXEL_STD {px_std} "
            "(the normalisation the backbone was trained with)")


# ------------------------------------------------------------------------------------------ writing


def save_safetensors(tensors: dict[str, torch.Tensor], path: Path, metadata: dict[str, str]) -> Path:
    from safetensors.torch import save

    tensors = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    data = save(tensors, metadata=metadata)
    return write_atomic(path, lambda fh: fh.write(data))


def export_checkpoint(checkpoint: str | Path, fmt: str, out: str | Path, include_heads: bool = False) -> ExportResult:
    """Write the checkpoint's backbone (or whole model) in format ``fmt`` to ``out``.

    Raises ``CheckpointError`` for a bad checkpoint and ``ValueError`` for an unknown format.
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; choose one of: {', '.join(FORMATS)}")
    if fmt == "hf":
        from .export_hf import export_hf

        num_tensors, how = export_hf(checkpoint, out, torchvision_how_to_load)
        return ExportResult(path=Path(out), format=fmt, num_tensors=num_tensors, how_to_load=how)
    if include_heads and fmt not in ("safetensors", "onnx"):
        raise ValueError("--include-heads is only for --format safetensors (the whole model) and onnx (backbone + "
                         "projector); the torchvision and detectron2 formats hold the backbone only")
    if fmt == "detectron2" and str(out).endswith(".pkl"):
        raise ValueError(f"{str(out)!r}: detectron2 reads a .pkl file as a plain pickle of NumPy arrays, but this "
                         "export is a torch file; name it .pth (detectron2 loads .pth files with torch.load)")
    model, cfg = load_pretrained(checkpoint)
    head = classifier_head(checkpoint)  # a fine-tuned model's classifier goes with it (not to detectron2)
    if fmt in ("torchvision", "detectron2") and cfg.model.backbone not in BACKBONES:
        raise ValueError(f"--format {fmt} is for the built-in ResNets; this run's backbone is "
                         f"{cfg.model.backbone}: use --format safetensors or onnx")
    in_channels = input_channels(model.backbone)
    out = Path(out)
    state = backbone_state(model)
    mismatches = torchvision_mismatches(cfg, in_channels)
    warnings = []
    if mismatches and fmt in ("torchvision", "detectron2"):
        warnings.append("this backbone is not a standard one (" + "; ".join(mismatches) + "): only a standard "
                        "backbone (width 64, 3 channels, ImageNet stem, global average) matches the stock "
                        f"{'torchvision constructor' if fmt == 'torchvision' else 'detectron2 ResNet'} as it is"
                        + ("; the lines printed below rebuild the difference with torchvision's own parts"
                           if fmt == "torchvision" else ""))
    if fmt == "onnx":
        mean, std = training_normalisation(cfg, in_channels)
        size = cfg.data.image_size or 224
        meta = {"producer": "simsiam", "backbone": cfg.model.backbone, "image_size": str(size),
                "channels": str(in_channels), "mean": ",".join(map(str, mean)), "std": ",".join(map(str, std)),
                "output": "projector z" if include_heads else "pooled backbone features"}
        classifier = None
        if head is not None:
            classifier = Classifier(model.backbone, len(head["bias"]))
            classifier.head.load_state_dict({"weight": head["weight"], "bias": head["bias"]})
            meta.update(output="class logits", classes=json.dumps(head["classes"]))
        export_onnx(model, out, channels=in_channels, image_size=size, metadata=meta, include_projector=include_heads,
                    classifier=classifier)
        return ExportResult(path=out, format=fmt, num_tensors=len(state), warnings=warnings,
                            how_to_load=onnxruntime_how_to(out, in_channels, size, mean, std))
    fc = {} if head is None else {"fc.weight": head["weight"], "fc.bias": head["bias"]}
    if fmt == "torchvision":
        tensors = {**state, **fc}
        save_atomic(tensors, out)
        how = torchvision_how_to_load(model.backbone, cfg, out, num_classes=len(fc) and len(head["bias"]))
    elif fmt == "safetensors":
        tensors = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()} if include_heads \
            else state
        tensors = {**tensors, **fc}
        metadata = {"producer": "simsiam", "backbone": cfg.model.backbone, "width": str(cfg.model.width),
                    "in_channels": str(in_channels), "contents": "model" if include_heads else "backbone"}
        if head is not None:
            metadata.update(contents=metadata["contents"] + " + classifier (fc.*)", classes=json.dumps(head["classes"]))
        save_safetensors(tensors, out, metadata)
        how = f"from safetensors.torch import load_file; state = load_file({str(out)!r})"
    else:
        tensors = to_detectron2(state)
        save_atomic({"model": tensors, "__author__": "simsiam", "matching_heuristics": True}, out)
        mean, std = training_normalisation(cfg, in_channels)
        how = detectron2_how_to_load(cfg, out, mean, std)
    return ExportResult(path=out, format=fmt, num_tensors=len(tensors), warnings=warnings, how_to_load=how)
