"""``simsiam similar``: the nearest images of a folder for query images, and near-duplicate groups."""
from __future__ import annotations

import argparse


def add_parser(sub) -> None:
    p = sub.add_parser("similar", help="nearest neighbours and near-duplicates over a folder of images",
                       description="Embed every image under --data with the checkpoint's backbone (as `simsiam "
                                   "embed` does, or read its output with --embeddings), then write for each query "
                                   "(--query FILE..., or every image of the folder) its k nearest images by cosine: "
                                   "neighbours.csv and neighbours.png (one row per query, the first 32). With "
                                   "--duplicates T, duplicates.csv lists groups of images with cosine >= T. The "
                                   "search is exact (torch, chunked; faiss above a million images when installed).",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("checkpoint", help="a checkpoint file or a run directory")
    p.add_argument("--data", metavar="DIR", help="the folder of images to search (recursive)")
    p.add_argument("--embeddings", metavar="DIR", help="simsiam embed's --out for that folder, instead of embedding it")
    p.add_argument("--query", nargs="+", default=[], metavar="FILE", help="query images (default: every image)")
    p.add_argument("--k", type=int, default=8, help="neighbours per query")
    p.add_argument("--duplicates", type=float, metavar="THRESHOLD",
                   help="also list near-duplicate groups: images with cosine >= THRESHOLD (e.g. 0.95)")
    p.add_argument("--out", required=True, metavar="DIR", help="where to write the outputs")
    p.add_argument("--image-size", type=int, default=0, help="input size (0: the checkpoint's training size)")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--device", default="cpu")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..eval.similar import find_similar

    res = find_similar(args.checkpoint, args.data, args.out, queries=args.query, k=args.k, duplicates=args.duplicates,
                       embeddings_dir=args.embeddings, image_size=args.image_size, batch_size=args.batch_size,
                       device=args.device, progress=not args.quiet)
    print(f"searched {res['images']} images for {res['queries']} queries, {res['k']} neighbours each, with "
          f"{res['engine']} in {res['time_s']:.1f}s -> {res['out_dir']}/neighbours.csv, neighbours.png "
          f"(first {res['grid_rows']} queries)")
    if "duplicate_groups" in res:
        print(f"near-duplicates: {res['duplicate_groups']} group(s), {res['duplicate_images']} images -> "
              f"{res['out_dir']}/duplicates.csv")
    return 0
