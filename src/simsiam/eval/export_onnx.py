"""The pretrained backbone (or backbone + projector) as an ONNX graph with a dynamic batch axis.

Input ``images``: float32 ``(B, C, S, S)``, normalised with the training mean/std (stored in the
file's metadata, with ``S`` and ``C``); output ``features``: ``(B, F)``. The graph is traced by
``torch.onnx.export``'s torch.export-based exporter (it needs onnx and onnxscript:
``pip install simsiam[onnx]``) on CPU in float32, in eval mode (BN uses its running statistics).
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Optional

import torch
from torch import nn

ONNX_HINT = "pip install simsiam[onnx]"


class _Encoder(nn.Module):
    """backbone + projector as one module, so that the export holds f(x) = z."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model.encode(images)


def onnx_problem() -> str:
    """Why an ONNX export cannot run here ("" when it can)."""
    for package in ("onnx", "onnxscript"):
        try:
            __import__(package)
        except ImportError:
            return f"--format onnx needs {package}, which is not installed: {ONNX_HINT}"
    return ""


def export_onnx(model: nn.Module, out: Path, *, channels: int, image_size: int, metadata: dict[str, str],
                include_projector: bool = False, classifier: Optional[nn.Module] = None) -> Path:
    """Write the ONNX graph of ``model.backbone`` (or ``model.encode``, or a fine-tuned ``classifier``:
    output ``logits``) to ``out``, atomically."""
    problem = onnx_problem()
    if problem:
        raise ValueError(problem)
    import onnx

    net = classifier if classifier is not None else _Encoder(model) if include_projector else model.backbone
    net = net.to("cpu").float().eval()
    example = torch.randn(2, channels, image_size, image_size)  # batch 2: 1 would be specialised away
    batch = torch.export.Dim("batch", min=1)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp")
    os.close(fd)
    try:
        with torch.no_grad():
            program = torch.onnx.export(net, (example,), input_names=["images"],
                                        output_names=["logits" if classifier is not None else "features"],
                                        dynamic_shapes=({0: batch},), dynamo=True, verbose=False)
        graph = program.model_proto
        for key, value in metadata.items():
            graph.metadata_props.add(key=key, value=value)
        onnx.save(graph, tmp)
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return out


def onnxruntime_how_to(path: Path, channels: int, image_size: int, mean, std) -> str:
    """The lines that embed one image with onnxruntime, NumPy and Pillow alone."""
    mode = "L" if channels == 1 else "RGB"
    mean = [round(m, 4) for m in mean]
    std = [round(s, 4) for s in std]
    return "\n".join([
        "import numpy as np, onnxruntime as ort; from PIL import Image",
        f"x = (np.asarray(Image.open('image.png').convert('{mode}').resize(({image_size}, {image_size})), np.float32)"
        f".reshape({image_size}, {image_size}, {channels}) / 255 - {mean}) / {std}",
        f"features = ort.InferenceSession({str(path)!r}).run(None, "
        "{'images': x.transpose(2, 0, 1)[None].astype(np.float32)})[0]  # (1, F)",
    ])
