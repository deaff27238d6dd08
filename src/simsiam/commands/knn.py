"""``simsiam knn``: weighted kNN accuracy of a checkpoint's backbone features."""
from __future__ import annotations

import argparse
import json


def add_parser(sub) -> None:
    p = sub.add_parser("knn", help="evaluate a checkpoint with weighted kNN",
                       description="Weighted kNN (Wu et al. 2018) of pooled, l2-normalised backbone features: the "
                                   "bank is the training split (un-augmented, eval mode), the queries another split.",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("checkpoint", help="a checkpoint file or a run directory")
    p.add_argument("--dataset", help="dataset to evaluate on (default: the one it was trained on)")
    p.add_argument("--data-dir", help="where that dataset lives")
    p.add_argument("--split", help="the query split (default: the held-out split the run was monitored on, "
                                   "data.eval_split; test for another dataset)")
    p.add_argument("--k", type=int, nargs="+", default=[200], help="neighbour counts")
    p.add_argument("--t", type=float, nargs="+", default=[0.1], help="temperatures")
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", metavar="FILE", help="also write the results as JSON here")
    p.add_argument("--baselines", action="store_true",
                   help="also give raw pixels and the randomly initialised network under the same protocol "
                        "(first k and t)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..eval.pretrained import knn_evaluate
    from ..parallel import distributed as dist

    res = knn_evaluate(args.checkpoint, dataset=args.dataset, data_dir=args.data_dir, split=args.split,
                       ks=args.k, ts=args.t, device=args.device)
    if not dist.is_main():  # under torchrun every rank holds the same figures; rank 0 reports them
        return 0
    print(f"kNN on {res['dataset']} ({res['split']}: {res['queries']} queries, bank {res['bank_size']})")
    print("| k | T | top-1 (%) |\n|---:|---:|---:|")
    for key, acc in res["accuracy"].items():
        k, t = (part.split("=")[1] for part in key.split(","))
        print(f"| {k} | {t} | {acc:.2f} |")
    if max(args.k) > res["bank_size"]:
        print(f"k={max(args.k)} is more than the bank's {res['bank_size']} images: k={res['bank_size']} is used")
    if args.baselines:
        res["baselines"] = _baselines(args, res["split"])
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(res, fh, indent=2)
    return 0


def _baselines(args: argparse.Namespace, split: str) -> dict:
    from ..artifacts.checkpoint import load
    from ..config import from_dict
    from ..eval.baselines import NAMES, cached_baseline_knn

    cfg = from_dict(load(args.checkpoint)["config"])
    if args.dataset:
        cfg.data.dataset = args.dataset
    if args.data_dir:
        cfg.data.data_dir = args.data_dir
    cfg.data.train_limit = cfg.data.eval_limit = 0
    cfg.data.eval_split = split  # the queries' split, as the checkpoint's figures above
    k, t = args.k[0], args.t[0]
    base = cached_baseline_knn(cfg, k=k, t=t, device=args.device)
    print(f"baselines, k={k}, T={t}:")
    for key, acc in base.items():
        print(f"  {NAMES[key]:28s} {acc:.2f}%")
    return base
