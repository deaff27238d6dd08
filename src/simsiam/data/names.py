"""File names in the text files the package writes (CSV, lists): a name that is not UTF-8 keeps its bytes.

On Linux a file name is bytes. Python hands over a name that is not valid UTF-8 (``bad\\xff.png``)
as a str holding "surrogate escapes" (PEP 383), which opens the same file but which the utf-8 codec
refuses to encode by default ("surrogates not allowed"). Text written here is encoded with the
``surrogateescape`` handler: such a name is written as its very bytes, as ``ls`` and ``find`` print
it, and read back with the same handler it is the same str again, which opens the same file. Valid
UTF-8 names are written exactly as before. JSON needs nothing: its default ASCII escapes keep
the surrogates (``"\\udcff"``) and ``json.loads`` gives them back.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import IO

NAME_ERRORS = "surrogateescape"


def text_bytes(text: str) -> bytes:
    """``text`` as UTF-8, file names that are not UTF-8 as their own bytes."""
    return text.encode("utf-8", NAME_ERRORS)


def open_text(path: str | os.PathLike, mode: str = "r") -> IO[str]:
    """A UTF-8 text file (CSV-ready: ``newline=""``) that reads and writes any file name."""
    return open(Path(path), mode, encoding="utf-8", errors=NAME_ERRORS, newline="")


def name_bytes(path: str | os.PathLike) -> bytes:
    """The name as the file system has it (for hashing): the bytes ``os.fsencode`` gives back."""
    return os.fsencode(path)
