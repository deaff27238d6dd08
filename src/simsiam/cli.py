"""The ``simsiam`` command: one subcommand per module in ``simsiam.commands``."""
from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence

from . import __version__
from .commands import COMMANDS


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="simsiam",
        description="SimSiam self-supervised representation learning (Chen & He, CVPR 2021).")
    parser.add_argument("--version", action="version", version=f"simsiam {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in COMMANDS:
        module.add_parser(sub)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.run(args) or 0)
    except KeyboardInterrupt:
        print("interrupted; the last epoch's checkpoint is intact (resume with --resume)", file=sys.stderr)
        return 130
    except UserFacingErrors as err:
        print(f"simsiam {args.command}: error: {err}", file=sys.stderr)
        return 2


def _user_facing_errors() -> tuple[type[BaseException], ...]:
    """Errors that explain themselves: printed as one line, without a traceback."""
    from .checkpoint import CheckpointError
    from .config import ConfigError
    from .data import DatasetNotFound
    from .train import TrainingDiverged

    return (ConfigError, DatasetNotFound, CheckpointError, TrainingDiverged, FileExistsError, ValueError)


UserFacingErrors = _user_facing_errors()

if __name__ == "__main__":
    sys.exit(main())
