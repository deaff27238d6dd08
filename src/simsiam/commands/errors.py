"""The command line's error boundary: every error a user can cause or meet, as one line.

Errors of the package's own kinds explain themselves already (their message is the line). Errors
that come from the system or from libraries -- a full disk, a directory that cannot be made, a
YAML file with a tab, a tensor of the wrong shape -- are translated here, in one place, into what
happened, to which path, and what to do. Anything else is a bug and keeps its traceback.
"""
from __future__ import annotations

import errno
from pathlib import Path
from typing import Optional

_WHAT_TO_DO = {
    errno.ENOSPC: "no space left on the device; free space or choose --out-dir on another disk",
    errno.EDQUOT: "disk quota exceeded; free space or choose --out-dir on another disk",
    errno.EACCES: "permission denied; choose a directory you can write (--out-dir) or fix its permissions",
    errno.EPERM: "operation not permitted; choose a directory you can write (--out-dir)",
    errno.EROFS: "read-only file system; choose --out-dir on a writable disk",
    errno.ENOTDIR: "a part of the path is a file, not a directory; choose another path",
    errno.ENOENT: "no such file or directory",
    errno.EISDIR: "is a directory, where a file was expected",
    errno.ENAMETOOLONG: "the name is too long; choose a shorter path",
    errno.EIO: "input/output error (a failing disk or network mount?)",
    errno.EFBIG: "file too large for a file-size limit (see `ulimit -f`) or the file system",
}


def _checkpoint_note(path: Optional[str]) -> str:
    """Whether the previous checkpoint survived the failed write (it does: writes are atomic)."""
    if not path:
        return ""
    target = Path(path)
    ckpt = target if target.name.startswith("checkpoint") else target.parent / "checkpoint.pt"
    if ckpt.is_file():
        return f"; the previous checkpoint, {ckpt}, is intact"
    return ""


def os_error_line(err: OSError) -> str:
    where = err.filename or ""
    if err.filename2:
        where = f"{where} -> {err.filename2}"
    cause = _WHAT_TO_DO.get(err.errno or -1) or (err.strerror or str(err))
    code = errno.errorcode.get(err.errno or -1, "")
    code = f" ({code})" if code else ""
    return f"{where or 'a file'}: {cause}{code}{_checkpoint_note(err.filename)}"


def runtime_error_line(err: RuntimeError) -> Optional[str]:
    """A shape mismatch between data and model (e.g. RGB data into a grayscale-trained backbone)."""
    first = str(err).strip().splitlines()[0] if str(err).strip() else ""
    if any(s in first for s in ("size mismatch", "Expected", "shape", "channels", "mat1 and mat2")):
        return (f"the data do not fit the model ({first[:200]}): use the dataset, channel count and image size "
                "the checkpoint was trained with (see its config.json)")
    return None


def user_facing() -> tuple[type[BaseException], ...]:
    """Errors that explain themselves: printed as one line, without a traceback."""
    from ..artifacts.checkpoint import CheckpointError
    from ..artifacts.run_lock import DirectoryBusy
    from ..augment.native import NativeUnavailable
    from ..config import ConfigError
    from ..data import DatasetNotFound
    from ..train.pretrain import TrainingDiverged

    return (ConfigError, DatasetNotFound, CheckpointError, TrainingDiverged, NativeUnavailable, FileExistsError,
            ValueError, DirectoryBusy)


def one_line(err: BaseException) -> Optional[str]:
    """The line for ``err``, or None when it is not a user's error (a bug: keep the traceback)."""
    if isinstance(err, user_facing()):
        return str(err) or type(err).__name__
    if isinstance(err, OSError):
        return os_error_line(err)
    if isinstance(err, RuntimeError):
        return runtime_error_line(err)
    return None

