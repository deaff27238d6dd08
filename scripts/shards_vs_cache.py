"""Training images/s from WebDataset shards as a fraction of the same images from the decoded cache,
side by side in one process: one model and optimiser, rounds of steps fed alternately by each
loader, the ratio of each round's images/s, so that a change of load on a shared machine moves both
halves of a round alike (separate runs minutes apart differed by 10% on their own).

    PYTHONPATH=src python scripts/shards_vs_cache.py --folder SUBSET --shards SHARDS \
        [--threads 2] [--rounds 7] [--steps 10] [data.num_workers=1 ...]

FOLDER is an image folder (class sub-folders) and SHARDS its ``simsiam pack`` output; the preset
is ``tinyimagenet``. Overrides apply to both loaders (e.g. ``data.num_workers=1`` to read the
shards in a DataLoader worker).
"""
from __future__ import annotations

import argparse
import copy
import statistics
import sys

import torch

from simsiam import get_preset
from simsiam.config.overrides import apply_overrides
from simsiam.data import load_dataset
from simsiam.data.cache import decoded_if_configured
from simsiam.data.loaders import build_train_loader
from simsiam.perf.bench import Trainer, _batches, _fed_steps
from simsiam.resolve import resolve
from simsiam.train.compile_pays import settle as settle_compile
from simsiam.train.budget import settle_budget


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--folder", required=True)
    p.add_argument("--shards", required=True)
    p.add_argument("--preset", default="tinyimagenet")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--steps", type=int, default=10, help="steps of each loader in a round")
    p.add_argument("overrides", nargs="*")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    base = get_preset(args.preset)
    base.data.eval_split = ""
    apply_overrides(base, args.overrides)
    cfgs = {}
    for name, dataset, folder in (("cache", "imagefolder", args.folder), ("shards", "shards", args.shards)):
        cfg = copy.deepcopy(base)
        cfg.data.dataset, cfg.data.data_dir = dataset, folder
        cfgs[name] = resolve(cfg)
    device = torch.device("cpu")
    sets = {"cache": decoded_if_configured(load_dataset("imagefolder", "train", args.folder), cfgs["cache"].data),
            "shards": load_dataset("shards", "train", args.shards)}
    for name in cfgs:
        settle_budget(cfgs[name], len(sets[name]))
    loaders = {n: build_train_loader(sets[n], cfgs[n], 2, device) for n in cfgs}
    for n, loader in loaders.items():
        print(f"{n}: {loader.describe()}")
    cache_cfg = cfgs["cache"]  # run.compile=auto as pretrain settles it (off for one epoch of this preset)
    print(settle_compile(cache_cfg, device, sets["cache"].channels, cache_cfg.data.image_size,
                         len(loaders["cache"])).line)
    trainer = Trainer(cfgs["cache"], sets["cache"].channels, device, print, len(loaders["cache"]))
    batches = {n: _batches(loader, 0, trainer.method) for n, loader in loaders.items()}
    for n in batches:  # first calls (a worker's start, the shuffle buffer's fill) stay out of the rounds
        for _ in range(3):
            trainer.step(next(batches[n])["views"])
    ratios = []
    for r in range(args.rounds):
        rate = {n: _fed_steps(batches[n], trainer, args.steps, device) for n in ("cache", "shards")}
        ratios.append(rate["shards"] / rate["cache"])
        print(f"round {r + 1}: cache {rate['cache']:.1f} images/s, shards {rate['shards']:.1f}: {100 * ratios[-1]:.1f}%")
    print(f"shards / cache: median {100 * statistics.median(ratios):.1f}% over {args.rounds} rounds "
          f"(min {100 * min(ratios):.1f}, max {100 * max(ratios):.1f}); {args.threads} thread(s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
