"""``simsiam pack``: a folder of images written as WebDataset shards, for ``data.dataset=shards``."""
from __future__ import annotations

import argparse


def add_parser(sub) -> None:
    p = sub.add_parser("pack", help="write a folder of images as WebDataset shards (shard-000000.tar, ...)",
                       description="Write every image under FOLDER (class sub-folders give the labels; without "
                                   "them the images are unlabelled) into tar shards of the WebDataset layout: "
                                   "<key>.jpg (the file's bytes) + <key>.cls (the class index), and shards.json "
                                   "(class names, images per shard). Train on them with data.dataset=shards "
                                   "data.data_dir=SHARDS/ data.eval_split=\"\": streamed, split across processes "
                                   "and workers. Needs the webdataset package (requirements-extras.txt).",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("folder", help="the folder of images (FOLDER/<class>/... for labels)")
    p.add_argument("--out", required=True, metavar="SHARDS", help="the folder to write the shards into")
    p.add_argument("--per-shard", type=int, default=5000, metavar="N",
                   help="images per shard (aim at shards of 100 MB to 1 GB)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..data.shards import pack

    pack(args.folder, args.out, per_shard=args.per_shard, progress=not args.quiet)
    return 0
