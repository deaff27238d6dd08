"""``simsiam visualize``: a 2-D map of a checkpoint's embeddings and a nearest-neighbour grid (PNG)."""
from __future__ import annotations

import argparse


def add_parser(sub) -> None:
    p = sub.add_parser("visualize", help="plot a 2-D embedding map and a retrieval grid of a checkpoint",
                       description="Write embedding_map.png (test-split pooled features projected to 2-D by PCA "
                                   "or t-SNE, coloured by class) and retrieval.png (test images and their nearest "
                                   "training images by cosine similarity, framed green when the label matches, red "
                                   "when not) to --out.",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("checkpoint", help="a checkpoint file or a run directory")
    p.add_argument("--out", required=True, metavar="DIR", help="where to write the PNG files")
    p.add_argument("--method", default="pca", choices=["pca", "tsne"], help="2-D projection of the map")
    p.add_argument("--limit", type=int, default=5000, help="test images on the map")
    p.add_argument("--queries", type=int, default=8, help="query rows of the retrieval grid")
    p.add_argument("--k", type=int, default=8, help="neighbours per query")
    p.add_argument("--bank-limit", type=int, default=0, help="use only the first N training images as the "
                                                             "retrieval bank (0: all)")
    p.add_argument("--dataset", help="dataset to use (default: the one it was trained on)")
    p.add_argument("--data-dir", help="where that dataset lives")
    p.add_argument("--device", default="cpu")
    p.add_argument("--seed", type=int, default=0, help="picks the queries and seeds t-SNE")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..eval.visualize import visualize

    res = visualize(args.checkpoint, args.out, method=args.method, limit=args.limit, queries=args.queries, k=args.k,
                    bank_limit=args.bank_limit, dataset=args.dataset, data_dir=args.data_dir, device=args.device,
                    seed=args.seed)
    print(f"wrote {res['embedding_map']} ({res['points']} points) and {res['retrieval']} (bank {res['bank']}; "
          f"{res['neighbour_label_agreement']:.0f}% of neighbours share the query's label) in {res['time_s']:.1f}s")
    return 0
