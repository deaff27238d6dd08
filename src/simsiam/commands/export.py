"""``simsiam export``: the pretrained backbone as a torchvision, safetensors, detectron2 or ONNX file."""
from __future__ import annotations

import argparse
import sys


def add_parser(sub) -> None:
    p = sub.add_parser("export", help="export a checkpoint's backbone for torchvision, safetensors, detectron2 or "
                                      "ONNX, or the model as a Hugging Face folder",
                       description="Write the pretrained backbone in a format other libraries load: 'torchvision' "
                                   "(a state dict torchvision.models.resnet*() loads with strict=False, only fc "
                                   "missing), 'safetensors' (the same tensors; --include-heads for the whole model), "
                                   "'detectron2' (detectron2's ResNet key names, for MODEL.WEIGHTS; use a .pth name), "
                                   "'onnx' (a graph with a dynamic batch axis, for onnxruntime; --include-heads adds "
                                   "the projector), 'hf' (a folder in the Hugging Face convention: model.safetensors, "
                                   "config.json and a model card, that load_pretrained and every evaluation command "
                                   "read). torchvision and detectron2 are for the built-in ResNets.",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("checkpoint", help="a checkpoint file or a run directory")
    p.add_argument("--format", required=True, choices=["torchvision", "safetensors", "detectron2", "onnx", "hf"])
    p.add_argument("--out", required=True, metavar="FILE", help="the file to write (replaced atomically); for hf "
                                                                "the folder")
    p.add_argument("--include-heads", action="store_true",
                   help="safetensors: the whole model (backbone, projector, predictor), keys as in the checkpoint; "
                        "onnx: backbone + projector (outputs z)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..eval.export import export_checkpoint

    res = export_checkpoint(args.checkpoint, args.format, args.out, include_heads=args.include_heads)
    for warning in res.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    print(f"wrote {res.path} ({res.format}, {res.num_tensors} tensors). To load it:")
    print(res.how_to_load)
    return 0
