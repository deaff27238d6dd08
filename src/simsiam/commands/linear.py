"""``simsiam linear``: linear evaluation of a checkpoint's frozen backbone (top-1 / top-5)."""
from __future__ import annotations

import argparse
import json
import sys


def add_parser(sub) -> None:
    p = sub.add_parser("linear", help="linear evaluation of a checkpoint (frozen backbone, top-1/top-5)",
                       description="Train a linear classifier on the frozen backbone's pooled features (eval mode: "
                                   "no weight and no BN statistic changes, checked after the first epoch) and report "
                                   "top-1/top-5 on the held-out split. Preset 'lars' is the paper's recipe (LARS, batch "
                                   "4096, lr 0.1 x batch/256, cosine, 90 epochs, no weight decay); 'sgd' is SGD lr 30, "
                                   "batch 256. Training views are RandomResizedCrop + flip; testing uses the centre "
                                   "crop (the image itself for in-memory datasets).",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("checkpoint", help="a checkpoint file or a run directory")
    p.add_argument("--preset", default="lars", choices=["lars", "sgd"], help="the optimisation recipe")
    p.add_argument("--epochs", type=int, help="training epochs (preset: 90)")
    p.add_argument("--batch-size", type=int, help="batch size (preset: 4096 for lars, 256 for sgd)")
    p.add_argument("--lr", type=float, help="base lr: scaled by batch/256 for lars (preset 0.1); used as is for "
                                            "sgd (preset 30)")
    p.add_argument("--bn-head", action="store_true",
                   help="put a non-affine BatchNorm1d before the linear layer (MoCo v3 / MAE style)")
    p.add_argument("--no-aug", action="store_true",
                   help="train on un-augmented images; implies --cached-features")
    p.add_argument("--crop-min-scale", type=float, default=0.08,
                   help="smallest crop area of the RandomResizedCrop training views (0.08: torchvision's and the "
                        "paper's; small images may prefer a milder crop)")
    p.add_argument("--cached-features", action="store_true",
                   help="extract the features once and train the classifier on them (fast on CPU; no augmentation)")
    p.add_argument("--dataset", help="dataset to evaluate on (default: the one it was trained on)")
    p.add_argument("--data-dir", help="where that dataset lives")
    p.add_argument("--split", help="the held-out split (default: the one the run was monitored on, "
                                   "data.eval_split; test for another dataset)")
    p.add_argument("--train-limit", type=int, default=0,
                   help="use N training images, a class-stratified random subset (0: all)")
    p.add_argument("--eval-limit", type=int, default=0, help="use N held-out images, chosen the same way (0: all)")
    p.add_argument("--image-size", type=int, default=0, help="input size (0: the checkpoint's training size)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1 or auto")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quiet", action="store_true", help="no per-epoch lines")
    p.add_argument("--json", metavar="FILE", help="also write the result (with its config) as JSON here")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..eval.linear import linear_config, linear_evaluate

    cfg = linear_config(args.preset, epochs=args.epochs, batch_size=args.batch_size, base_lr=args.lr,
                        bn_head=args.bn_head, augment=not args.no_aug,
                        crop_scale_min=args.crop_min_scale, cached_features=args.cached_features,
                        dataset=args.dataset, data_dir=args.data_dir, split=args.split, train_limit=args.train_limit,
                        eval_limit=args.eval_limit, image_size=args.image_size, device=args.device, seed=args.seed)
    progress = None if args.quiet else (lambda line: print(line, file=sys.stderr, flush=True))
    res = linear_evaluate(args.checkpoint, cfg, progress=progress)
    print(f"linear evaluation of {res['checkpoint']} on {res['dataset']} ({res['mode']}; {res['train_images']} train, "
          f"{res['test_images']} {res['split']} images; {cfg.optimizer} lr {res['lr']:.4g}, batch {res['batch_size']}, "
          f"{res['epochs']} epochs)")
    print("| top-1 (%) | top-5 (%) | epochs | time (s) |\n|---:|---:|---:|---:|")
    print(f"| {res['top1']:.2f} | {res['top5']:.2f} | {res['epochs']} | {res['time_s']:.1f} |")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(res, fh, indent=2)
    return 0
