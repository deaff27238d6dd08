"""``simsiam pretrain``: train a representation, with monitors, checkpoints, plots and a report."""
from __future__ import annotations

import argparse
import sys

from .common import add_config_args, config_from_args


def add_parser(sub) -> None:
    p = sub.add_parser("pretrain", help="pretrain a backbone with SimSiam",
                       description="Pretrain with SimSiam. Start from a preset, change it with a YAML file and "
                                   "KEY=VALUE overrides. Under torchrun the same command trains on every process.",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_config_args(p)
    p.add_argument("--resume", metavar="RUN_DIR",
                   help="continue the run in RUN_DIR from its last checkpoint (its saved config is used; "
                        "--epochs may extend it)")
    p.add_argument("--stop-on-collapse", action="store_true",
                   help="stop when std(z/|z|) x sqrt(d) falls under monitor.collapse_threshold")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..parallel import distributed as dist
    from ..train.pretrain import pretrain
    from ..train.stop import EXIT_STOPPED

    cfg = config_from_args(args)
    if args.stop_on_collapse:
        cfg.monitor.stop_on_collapse = True
    if args.resume:
        cfg.run.out_dir = args.resume
        cfg.optim.epochs = args.epochs or 0  # 0: keep the run's own number of epochs
    result = pretrain(cfg, resume=bool(args.resume))
    if result.stopped_early == "signal":
        if dist.is_main():
            print(result.stop_line, file=sys.stderr)
        return EXIT_STOPPED
    final = result.final
    if final and dist.is_main():  # under torchrun every rank returns here; one line is enough
        knn = f", kNN accuracy {final['knn_acc']:.2f}%" if "knn_acc" in final else ""
        print(f"done: {result.epochs_done} epochs, loss {final['loss']:.4f}, "
              f"std*sqrt(d) {final['z_std_sqrt_d']:.3f}{knn}; outputs in {result.run_dir}")
    return 3 if result.stopped_early == "collapse" else 0
