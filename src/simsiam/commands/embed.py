"""``simsiam embed``: embeddings of every image of a folder, as a NumPy array plus an index."""
from __future__ import annotations

import argparse


def add_parser(sub) -> None:
    p = sub.add_parser("embed", help="embed every image of a folder with a checkpoint",
                       description="Embed every image under --data (searched recursively) with the checkpoint's "
                                   "backbone (pooled features) or, with --projector, its projector. Images are "
                                   "converted to the checkpoint's channel count, resized and centre-cropped. Writes "
                                   "embeddings.npy (float32, N x D), index.csv (row, path) and unreadable.txt "
                                   "to --out, all or nothing; unreadable files are skipped, not fatal.",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("checkpoint", help="a checkpoint file or a run directory")
    p.add_argument("--data", required=True, metavar="DIR", help="the folder of images")
    p.add_argument("--out", required=True, metavar="DIR", help="where to write the outputs")
    p.add_argument("--projector", action="store_true", help="embed with the projector output instead of the "
                                                            "pooled backbone features")
    p.add_argument("--image-size", type=int, default=0, help="input size (0: the checkpoint's training size)")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--workers", type=int, default=0, help="DataLoader processes decoding images")
    p.add_argument("--device", default="cpu")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..eval.embed import embed_folder

    try:
        res = embed_folder(args.checkpoint, args.data, args.out, projector=args.projector, image_size=args.image_size,
                           batch_size=args.batch_size, device=args.device, progress=not args.quiet,
                           num_workers=args.workers)
    except KeyboardInterrupt as err:  # the CLI prints this line: the outputs are written all or nothing
        err.line = f"interrupted; {args.out} was left as it was (the outputs are written together, at the end)"
        raise
    print(f"embedded {res['embedded']} of {res['images']} images ({res['what']}, {res['dim']}-d, "
          f"{res['channels']} channel(s) at {res['image_size']} px) in {res['time_s']:.1f}s -> "
          f"{res['out_dir']}/embeddings.npy, index.csv"
          + (f"; {len(res['unreadable'])} unreadable listed in unreadable.txt" if res["unreadable"] else ""))
    return 0
