"""The ``simsiam`` command: one subcommand per module in ``simsiam.commands``."""
from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
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
    # torch is imported from here on, under a Ctrl-C guard: it takes seconds, and ``import simsiam``
    # does not import it (the package's names are lazy), so a Ctrl-C meanwhile ends in one line.
    try:
        args = parse_args(argv)  # the commands' parsers import torch
    except KeyboardInterrupt:
        print("simsiam: interrupted while starting; nothing was done", file=sys.stderr)
        return 130
    interrupts = _Interrupts().install()
    try:
        from .parallel.distributed import launched_by_torchrun
        from .train.allocator import keep_freed_memory

        keep_freed_memory()  # before any tensor: every command's large temporaries are reused, not re-faulted
        if launched_by_torchrun() and args.command not in TORCHRUN_COMMANDS:
            if os.environ.get("RANK") == "0":
                print(f"simsiam {args.command}: error: this command runs in one process; launch it without "
                      f"torchrun (`simsiam {args.command} ...`). Under torchrun: {', '.join(TORCHRUN_COMMANDS)}",
                      file=sys.stderr)
            return 2
        return int(args.run(args) or 0)
    except BrokenPipeError:
        # The reader went away (`simsiam presets | head`): nothing is wrong, and there is no one to tell.
        # Point stdout at /dev/null so that the interpreter's final flush does not raise again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except KeyboardInterrupt as err:  # a second stop signal (train/stop.py), or Ctrl-C outside training
        code = getattr(err, "exit_code", 130)
        interrupts.handled(code, by_signal=hasattr(err, "signum"))
        print(f"simsiam {args.command}: {_interrupted_line(err)}", file=sys.stderr)
        return code
    except Exception as err:
        line = one_line(err)
        if line is None:
            raise  # not a user's error: a bug, whose traceback is wanted
        print(f"simsiam {args.command}: error: {_rank_prefix()}{line}", file=sys.stderr)
        return 2
    finally:
        distributed = sys.modules.get(f"{__package__}.parallel.distributed")  # None: interrupted before it
        if distributed is not None:
            distributed.cleanup()  # under torchrun: release the process group the command started (no-op otherwise)
        interrupts.uninstall()


class _Interrupts:
    """Ctrl-C while a command runs: the first raises KeyboardInterrupt, as Python's own handler does.
    Those that follow while it is handled -- files removed, DataLoader workers and the process group
    shut down -- are ignored, so that the cleanup ends and no second traceback comes from a
    destructor or an atexit callback (torch registers some); once the command's line is printed, one
    more ends the process at once. Installed only where SIGINT has Python's default handler (not
    under ``nohup``, not off the main thread); ``train/stop.py`` installs its own during training."""

    def __init__(self):
        self.state, self.code, self.by_signal, self._installed = "running", 130, False, False

    def install(self) -> "_Interrupts":
        if (threading.current_thread() is threading.main_thread()
                and signal.getsignal(signal.SIGINT) is signal.default_int_handler):
            signal.signal(signal.SIGINT, self._on_signal)
            self._installed = True
        return self

    def handled(self, code: int, by_signal: bool) -> None:
        """The command has stopped on an interrupt; the process exits with ``code``. ``by_signal``: it
        came from a signal handler other than this one (train/stop.py's, the image cache's)."""
        self.by_signal = by_signal or self.state == "cleaning up"
        self.state, self.code = "handled", code

    def uninstall(self) -> None:
        """Python's handler back, except after a real Ctrl-C: then the process is on its way out. (A
        KeyboardInterrupt raised by code, in a test, leaves the calling process as it was.)"""
        if self.state == "cleaning up":  # a command caught the Ctrl-C itself (finetune) and returned
            self.state, self.by_signal = "handled", True
        if self._installed and not (self.state == "handled" and self.by_signal):
            signal.signal(signal.SIGINT, signal.default_int_handler)

    def _on_signal(self, signum, frame) -> None:
        if self.state == "running":
            self.state = "cleaning up"
            raise KeyboardInterrupt
        if self.state == "handled":
            os._exit(self.code)


def _interrupted_line(err: KeyboardInterrupt) -> str:
    if getattr(err, "line", None):  # the error says itself what was left (e.g. data.DecodeInterrupted)
        return err.line
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
