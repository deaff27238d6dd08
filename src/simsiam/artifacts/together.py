"""Several files written all or nothing (``simsiam embed``'s array, index and list of unreadable files).

Each file goes to a temporary beside it and is flushed to disk; only once every one is written are
they renamed over their names, one right after the other. A failure or an interrupt before that
(a full disk, a name that cannot be written, Ctrl-C) removes the temporaries and leaves the old
files as they were, or none: never a new array beside an old or half-written index.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import BinaryIO, Callable


def write_together(files: dict[Path, Callable[[BinaryIO], None]]) -> list[Path]:
    """Call each ``write(file)`` on a temporary file, then rename them all, in ``files``' order (put
    last the file whose presence says the others are complete). Returns the paths written."""
    temporaries: dict[Path, str] = {}
    try:
        for path, write in files.items():
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
            temporaries[path] = tmp
            os.chmod(tmp, 0o666 & ~_umask())  # as open() would create it (mkstemp makes it private)
            try:
                with os.fdopen(fd, "wb") as fh:
                    write(fh)
                    fh.flush()
                    os.fsync(fh.fileno())
            except OSError as err:
                if not err.filename:  # name the file being written (a full disk says only "No space left")
                    raise OSError(err.errno, err.strerror, str(path)) from err
                raise
        for path, tmp in temporaries.items():
            os.replace(tmp, path)
    except BaseException:
        for tmp in temporaries.values():
            if os.path.exists(tmp):
                os.unlink(tmp)
        raise
    return list(files)


def _umask() -> int:
    mask = os.umask(0)  # reading the umask means setting it: set straight back
    os.umask(mask)
    return mask
