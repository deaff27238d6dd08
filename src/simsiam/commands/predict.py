"""``simsiam predict``: classify every image of a folder with a fine-tuned model."""
from __future__ import annotations

import argparse
import sys


def add_parser(sub) -> None:
    p = sub.add_parser("predict", help="classify a folder of images with a fine-tuned model",
                       description="Classify every image under --data (recursive) with a model saved by `simsiam "
                                   "finetune` (its models/ folder). Writes a CSV: path, predicted class, its "
                                   "probability, the true class where the image's folder is named after one, and "
                                   "every class's probability. Unreadable files are skipped and listed.",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("model", help="a fine-tuned model (FINETUNE_DIR/models/<name>.pt)")
    p.add_argument("--data", required=True, metavar="DIR", help="the folder of images")
    p.add_argument("--out", default="predictions.csv", metavar="CSV", help="the CSV to write (replaced atomically)")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--workers", type=int, default=0, help="DataLoader processes decoding images")
    p.add_argument("--device", default="cpu")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..eval.predict import predict_folder

    res = predict_folder(args.model, args.data, args.out, device=args.device, batch_size=args.batch_size,
                         num_workers=args.workers)
    for path in res["unreadable"]:
        print(f"warning: skipped unreadable image {path}", file=sys.stderr)
    line = f"predicted {res['predicted']} of {res['images']} images ({res['classes']} classes) -> {res['out']}"
    if res["accuracy"] is not None:
        line += f"; accuracy {res['accuracy']:.2f}% on the {res['judged']} images in folders named after a class"
    print(line)
    return 0
