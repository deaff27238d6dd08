"""The ``simsiam`` command's entry point: imports the command line, then runs it.

Importing it takes seconds (torch, torchvision); a Ctrl-C in that time would otherwise print
Python's traceback of whichever import it landed in. Here it ends the command with one line and
the usual exit status of an interrupt, 130. Nothing has been written by then.
"""
from __future__ import annotations

import sys
from typing import Optional, Sequence

INTERRUPTED = 130  # 128 + SIGINT, as a shell reports an interrupted command


def main(argv: Optional[Sequence[str]] = None) -> int:
    try:
        from .cli import main as run
    except KeyboardInterrupt:
        print("simsiam: interrupted while starting; nothing was done", file=sys.stderr)
        return INTERRUPTED
    return run(argv)
