"""One process at a time in a run's directory: an exclusive lock held for the life of the run.

Two processes writing one directory lose work without a word: their records interleave in
``metrics.jsonl`` and each replaces the other's checkpoint. A run (``pretrain``, its ``--resume``
and ``--resume auto``; a ``finetune`` folder) therefore takes :class:`DirectoryLock` before it
writes anything there, and a second process is refused with one line naming the holder.

The lock is ``flock`` on ``.simsiam.lock`` inside the directory. The kernel releases it when the
holder's last descriptor closes -- on any exit, ``kill -9`` included -- so a lock left by a dead
process is not a lock at all: the next run simply takes it, with no staleness to guess. The file
itself is never removed (removing a lock file while another process has it open lets two processes
hold locks on two different files); it holds a small JSON of the holder (pid, host, start, command)
for the refusal line, read only by a refused process.

``flock`` belongs to the open file, which ``fork`` shares: a DataLoader worker forked while the
lock is held would keep it past the holder's death. Forked children close their copy at once
(:func:`_close_in_forked_child`), which leaves the parent's lock as it is.
"""
from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
import time
from pathlib import Path

LOCK_NAME = ".simsiam.lock"

_held: set[int] = set()  # descriptors of the locks this process holds (closed in forked children)


class DirectoryBusy(RuntimeError):
    """Another live process holds the directory's lock; the message names it."""


class DirectoryLock:
    """``with DirectoryLock(path, "run"):`` -- the directory is this process's until the block ends.

    Raises :class:`DirectoryBusy` when another process holds it. ``what`` names the directory in
    the refusal ("run", "fine-tune"); ``advice`` is what the refused user may do instead, ``on_stop``
    what the holder does when stopped."""

    def __init__(self, directory: str | Path, what: str = "run", advice: str = "choose another --out-dir",
                 on_stop: str = "it checkpoints"):
        self.directory, self.what, self.advice, self.on_stop = Path(directory), what, advice, on_stop
        self._fd: int | None = None

    @property
    def path(self) -> Path:
        return self.directory / LOCK_NAME

    def acquire(self) -> "DirectoryLock":
        self.directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            raise DirectoryBusy(self._busy_line(holder)) from None
        except BaseException:
            os.close(fd)
            raise
        _held.add(fd)
        self._fd = fd
        try:
            _write_holder(fd)
        except OSError:  # a full disk: the lock holds all the same; only the refusal line loses its details
            pass
        return self

    def release(self) -> None:
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        _held.discard(fd)
        try:
            os.ftruncate(fd, 0)  # no holder named once it has gone (a refused reader sees none)
        except OSError:
            pass
        os.close(fd)  # closing the last descriptor releases the flock

    def __enter__(self) -> "DirectoryLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()

    def _busy_line(self, holder: dict) -> str:
        if holder:
            who = (f"process {holder.get('pid')} on {holder.get('host')}, started {holder.get('started')}: "
                   f"`{holder.get('command')}`")
        else:
            who = "another process (it has not written its details yet)"
        return (f"{self.directory} is in use by another {self.what}: {who}; two processes in one {self.what} "
                f"directory overwrite each other's work. Wait for it to end or stop it (kill -TERM "
                f"{holder.get('pid', '<pid>')}; {self.on_stop}), or {self.advice}")


def _write_holder(fd: int) -> None:
    holder = {"pid": os.getpid(), "host": socket.gethostname(),
              "started": time.strftime("%Y-%m-%d %H:%M:%S"), "command": _command()}
    data = json.dumps(holder).encode()
    os.ftruncate(fd, 0)
    os.pwrite(fd, data, 0)


def _read_holder(fd: int) -> dict:
    """The holder's details; {} when they are not there (yet) or do not parse."""
    try:
        holder = json.loads(os.pread(fd, 4096, 0).decode() or "{}")
    except (OSError, ValueError):
        return {}
    return holder if isinstance(holder, dict) else {}


def _command() -> str:
    argv = list(sys.argv)
    if argv and (argv[0].endswith(("simsiam", "__main__.py")) or argv[0] == "-m"):
        argv[0] = "simsiam"
    return " ".join(argv)


def _close_in_forked_child() -> None:
    for fd in list(_held):
        try:
            os.close(fd)  # this copy only: the parent's open file, and so its lock, stay
        except OSError:
            pass
    _held.clear()


os.register_at_fork(after_in_child=_close_in_forked_child)
