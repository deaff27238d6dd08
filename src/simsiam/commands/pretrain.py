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
    p.add_argument("--resume", metavar="RUN_DIR|auto",
                   help="continue the run in RUN_DIR from its last checkpoint, mid-epoch ones included (its saved "
                        "config is used; --epochs, the device, logging and checkpoint settings may change, other "
                        "changes are refused). 'auto': resume the run in --out-dir if it is an unfinished run of "
                        "this config (or a finished one without its report), start it if there is none (for "
                        "requeued jobs)")
    p.add_argument("--stop-on-collapse", action="store_true",
                   help="stop when std(z/|z|) x sqrt(d) falls under monitor.collapse_threshold")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..parallel import distributed as dist
    from ..train.pretrain import pretrain
    from ..train.stop import EXIT_STOPPED

    cfg, resume = _config_and_resume(args)
    if cfg is None:
        return 0
    if args.stop_on_collapse:
        cfg.monitor.stop_on_collapse = True
    result = pretrain(cfg, resume=resume)
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


def _config_and_resume(args: argparse.Namespace):
    """The config to run and whether it resumes; ``(None, False)`` when ``--resume auto`` finds the
    run already finished (said in one line). A finished run whose end outputs are missing (a full
    disk as they were written) is resumed: a resumed finished run writes them again."""
    from ..artifacts import checkpoint as ckpt_io
    from ..artifacts.report import missing_outputs
    from ..config import from_dict
    from ..parallel import distributed as dist
    from ..train.resume import auto_resume

    if args.resume == "auto":
        cfg = config_from_args(args)
        state, saved = auto_resume(cfg)
        if state == "finished":
            missing = missing_outputs(cfg.run.out_dir)
            if not missing:
                if dist.is_main():
                    print(f"{cfg.run.out_dir} already holds this run, finished ({saved['epoch']} epochs); "
                          "nothing to do")
                return None, False
            if dist.is_main():  # its end was cut short (a full disk?): resuming a finished run writes them
                print(f"{cfg.run.out_dir} holds this run, finished ({saved['epoch']} epochs), without its "
                      f"{' and '.join(missing)}: writing {'them' if len(missing) > 1 else 'it'} again")
        return cfg, state in ("resume", "finished")
    if args.resume:
        # The run's own recipe, changed only by what this command line sets explicitly: the
        # preset's defaults must not count as changes.
        own = from_dict(ckpt_io.load(args.resume, resuming=True)["config"])
        cfg = config_from_args(args, base=own)
        cfg.run.out_dir = args.resume
        return cfg, True
    return config_from_args(args), False
