"""``simsiam import``: another implementation's checkpoint as a run folder the evaluation commands read."""
from __future__ import annotations

import argparse


def add_parser(sub) -> None:
    from ..config.presets import PRESETS

    p = sub.add_parser("import", help="import an official, lightly, solo-learn, torchvision or timm checkpoint "
                                      "as a run folder",
                       description="Read a checkpoint of another SimSiam implementation (or a plain backbone) "
                                   "without unpickling code, map its keys onto this package's model (backbone, "
                                   "projector, predictor), read the architecture from its tensors, check every "
                                   "shape, and write a run folder (checkpoint.pt, config.json, import.md) that knn, "
                                   "linear, embed, similar, export and finetune take.",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("source", help="the checkpoint file (a torch file or safetensors), or a folder written by "
                                  "`simsiam export --format hf`")
    p.add_argument("--from", dest="fmt", required=True, metavar="FORMAT",
                   help="official (facebookresearch/simsiam's checkpoint_*.pth.tar), lightly, solo-learn, "
                        "torchvision (a ResNet state dict), timm:<model name>, hf (simsiam's own export)")
    p.add_argument("--out", required=True, metavar="RUN_DIR", help="the run folder to write")
    p.add_argument("--preset", default="imagenet", choices=sorted(PRESETS),
                   help="the data settings the evaluation commands default to (dataset, image size); the model's "
                        "come from the file")
    p.add_argument("--dataset", help="the dataset the evaluation commands default to (e.g. imagefolder)")
    p.add_argument("--data-dir", help="where that dataset lives")
    p.add_argument("--seed", type=int, default=0, help="seeds the heads a file has not (torchvision, timm)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..interop import import_checkpoint

    res = import_checkpoint(args.source, args.fmt, args.out, preset=args.preset, dataset=args.dataset,
                            data_dir=args.data_dir, seed=args.seed)
    print(f"imported {args.source} (--from {args.fmt}) into {res.run_dir}: {res.cfg.model.backbone}, "
          f"{res.cfg.model.in_channels} channel(s)")
    print(res.table)
    for note in res.notes:
        print(f"- {note}")
    print(f"evaluate it: simsiam knn {res.run_dir} --dataset ... --data-dir ...; the table is kept in "
          f"{res.run_dir / 'import.md'}")
    return 0
