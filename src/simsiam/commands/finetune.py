"""``simsiam finetune``: is pretraining worth it for these labels? Fine-tune, compare, report."""
from __future__ import annotations

import argparse
import sys


def add_parser(sub) -> None:
    from ..downstream.recipe import CONTENDERS, FinetuneRecipe

    r = FinetuneRecipe()
    p = sub.add_parser("finetune", help="fine-tune a run's backbone on few labels, against scratch, a linear probe "
                                         "and kNN",
                       description="Fine-tune the run's backbone end to end with a new linear classifier on a label "
                                   "budget of a labelled dataset (the run's own, or --dataset/--data-dir: transfer), "
                                   "beside the same network trained from scratch, a linear probe on the frozen "
                                   "features, kNN on them and kNN on pixels: same labels, same budget, each "
                                   "contender's lr (or k) chosen on a validation part of the labels. Writes "
                                   "report.md, label_efficiency.png, results.json and the trained classifiers "
                                   "(models/) to --out; the run itself is only read. Run the same command again "
                                   "to go on after an interruption.",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("run_dir", metavar="RUN", help="a pretraining run directory or checkpoint")
    p.add_argument("--dataset", help="the labelled dataset (default: the run's)")
    p.add_argument("--data-dir", help="where that dataset lives")
    p.add_argument("--labels-per-class", type=int, nargs="+", default=[], metavar="N",
                   help="budgets of N labelled images per class")
    p.add_argument("--label-fraction", nargs="+", default=[], metavar="F",
                   help="budgets as a fraction of every class: 0.01 or 1%% (the literature's 1%% and 10%%); with "
                        "neither option: 1%% 10%%")
    p.add_argument("--label-seeds", type=int, nargs="+", default=[0, 1, 2], metavar="S",
                   help="seeds of the label draws: the table gives mean +- std over them")
    p.add_argument("--contenders", nargs="+", default=list(CONTENDERS), choices=CONTENDERS)
    p.add_argument("--lrs", type=float, nargs="+", default=list(r.lrs),
                   help="base lrs (per 256 images) searched for fine-tuning and scratch")
    p.add_argument("--epochs", type=int, default=r.epochs, help="epochs of the labelled images ...")
    p.add_argument("--min-steps", type=int, default=r.min_steps, help="... but at least this many steps")
    p.add_argument("--batch-size", type=int, default=r.batch_size)
    p.add_argument("--weight-decay", type=float, default=r.weight_decay)
    p.add_argument("--backbone-lr-scale", type=float, default=r.backbone_lr_scale,
                   help="the backbone's lr relative to the head's (0 trains the head and BN statistics only)")
    p.add_argument("--head-init", default=r.head_init, choices=["zero", "probe"],
                   help="the classifier's start: zero, or the linear probe fitted on the frozen features (LP-FT)")
    p.add_argument("--crop-min-scale", type=float, help="smallest crop area (default: the run's aug.crop_scale_min)")
    p.add_argument("--amp", default=r.amp, choices=["off", "bf16", "auto"],
                   help="precision: off (fp32), bf16, auto (bf16 where this CPU or GPU computes it natively)")
    p.add_argument("--image-size", type=int, default=0, help="input side (0: the run's training size)")
    p.add_argument("--out", help="the fine-tune's folder (default: RUN-finetune beside the run)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1 or auto")
    p.add_argument("--quiet", action="store_true", help="only the line of each finished result")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..downstream import FinetuneRecipe, finetune

    recipe = FinetuneRecipe(lrs=tuple(args.lrs), epochs=args.epochs, min_steps=args.min_steps,
                            batch_size=args.batch_size, weight_decay=args.weight_decay,
                            backbone_lr_scale=args.backbone_lr_scale,
                            head_init=args.head_init, crop_scale_min=args.crop_min_scale, amp=args.amp)

    def log(line: str) -> None:
        if not args.quiet or ": test " in line or line.startswith("fine-tuning "):
            print(line, flush=True)

    try:
        res = finetune(args.run_dir, dataset=args.dataset, data_dir=args.data_dir, labels_per_class=args.labels_per_class,
                       label_fractions=args.label_fraction, label_seeds=args.label_seeds, contenders=args.contenders,
                       recipe=recipe, out_dir=args.out, image_size=args.image_size, device=args.device, log=log)
    except KeyboardInterrupt:
        print("simsiam finetune: interrupted; every result finished so far is kept in its folder, and the same command "
              "goes on from there (the pretraining run was not touched)", file=sys.stderr)
        return 130
    out = res["out_dir"]
    with open(f"{out}/report.md") as fh:
        print(fh.read())
    print(f"outputs in {out}: report.md, label_efficiency.png, results.json, models/")
    return 0
