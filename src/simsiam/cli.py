"""The ``simsiam`` command: one subcommand per module in ``simsiam.commands``."""
from __future__ import annotations

import argparse
import os
import sys
from typing import Optional, Sequence

from .commands import COMMANDS
from .commands.errors import one_line
from .version import __version__


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="simsiam",
        description="SimSiam self-supervised representation learning (Chen & He, CVPR 2021).")
    parser.add_argument("--version", action="version", version=f"simsiam {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in COMMANDS:
        module.add_parser(sub)
    return parser


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    """Parse the command line. ``KEY=VALUE`` overrides may come anywhere, also after an option
    (``pretrain a=1 --out-dir X b=2``): argparse takes a positional list only in one piece, so the
    pieces it leaves over are joined to the command's overrides here."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    stray = [t for t in extra if "=" in t and not t.startswith("-")]
    if extra and (len(stray) < len(extra) or not hasattr(args, "overrides")):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if stray:
        args.overrides = list(args.overrides or []) + stray
    return args


# Commands that split their work over torchrun's processes. Any other, launched by torchrun, would
# run whole in every process, each writing the same outputs: it is refused instead.
TORCHRUN_COMMANDS = ("pretrain", "knn")


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    from .parallel.distributed import launched_by_torchrun
    from .train.allocator import keep_freed_memory

    keep_freed_memory()  # before any tensor: every command's large temporaries are reused, not re-faulted

    if launched_by_torchrun() and args.command not in TORCHRUN_COMMANDS:
        if os.environ.get("RANK") == "0":
            print(f"simsiam {args.command}: error: this command runs in one process; launch it without torchrun "
                  f"(`simsiam {args.command} ...`). Under torchrun: {', '.join(TORCHRUN_COMMANDS)}", file=sys.stderr)
        return 2
    try:
        return int(args.run(args) or 0)
    except BrokenPipeError:
        # The reader went away (`simsiam presets | head`): nothing is wrong, and there is no one to tell.
        # Point stdout at /dev/null so that the interpreter's final flush does not raise again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except KeyboardInterrupt as err:  # a second stop signal (train/stop.py), or Ctrl-C outside training
        print(f"simsiam {args.command}: {_interrupted_line(err)}", file=sys.stderr)
        return getattr(err, "exit_code", 130)
    except Exception as err:
        line = one_line(err)
        if line is None:
            raise  # not a user's error: a bug, whose traceback is wanted
        print(f"simsiam {args.command}: error: {_rank_prefix()}{line}", file=sys.stderr)
        return 2
    finally:
        from .parallel.distributed import cleanup

        cleanup()  # under torchrun: release the process group the command started (no-op otherwise)


def _interrupted_line(err: KeyboardInterrupt) -> str:
    run_dir = getattr(err, "run_dir", None)
    if run_dir is not None and (run_dir / "checkpoint.pt").exists():
        return (f"interrupted before the step ended; the last checkpoint, {run_dir / 'checkpoint.pt'}, is intact "
                f"(resume with --resume {run_dir})")
    return "interrupted; no checkpoint was written"


def _rank_prefix() -> str:
    """``"rank 1: "`` under torchrun, where every process may report the same error; "" otherwise."""
    from .parallel import distributed as dist

    return f"rank {dist.rank()}: " if dist.world_size() > 1 else ""


if __name__ == "__main__":
    sys.exit(main())
