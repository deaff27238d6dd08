"""Exceptions raised by the dataset loaders."""

from __future__ import annotations

from typing import Sequence


class DatasetNotFound(FileNotFoundError):
    """A dataset's files are not where we looked.

    The message names the dataset, every place that was searched (and why each
    one did not qualify) and how to obtain the data, so a user can fix it
    without reading code. ``dataset`` and ``searched`` are kept as attributes
    for programmatic use.
    """

    def __init__(self, message: str, dataset: str = "", searched: Sequence[str] = ()):
        super().__init__(message)
        self.dataset = dataset
        self.searched = list(searched)

    def __str__(self) -> str:
        # OSError's own __str__ would format errno/filename; we only have a message.
        return self.args[0]

    def __reduce__(self):
        # Keep the attributes when the error crosses a process boundary.
        return (type(self), (self.args[0], self.dataset, self.searched))


class UnreadableImage(Exception):
    """An image file could not be decoded (truncated, corrupt or not an image)."""

    def __init__(self, path: str, reason: str = ""):
        super().__init__(path, reason)
        self.path = path
        self.reason = reason

    def __str__(self) -> str:
        return f"cannot decode image {self.path!r}" + (f": {self.reason}" if self.reason else "")


class DecodeInterrupted(KeyboardInterrupt):
    """A stop signal (Ctrl-C, SIGTERM) while a folder was being decoded into the image cache. Nothing
    of the cache is left behind; ``line`` is what the command line prints, ``exit_code`` 128 + the
    signal's number, as the shell reports a process ended by it."""

    def __init__(self, signum: int, what: str):
        super().__init__(signum)
        self.signum = signum
        self.line = f"interrupted while decoding {what} into the image cache; nothing was cached (the next run decodes again)"

    @property
    def exit_code(self) -> int:
        return 128 + self.signum
