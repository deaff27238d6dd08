"""Checkpoints: written atomically, read without unpickling arbitrary objects.

A checkpoint is a dict of tensors and plain Python values (state dicts, step, epoch, RNG states,
the resolved config as a dict, the package version). ``torch.save`` writes it to a temporary file
in the same directory, which is then renamed over the target: a crash leaves the previous
checkpoint whole. ``torch.load(..., weights_only=True)`` refuses anything but tensors and
primitive containers, so a checkpoint from disk cannot run code.
"""
from __future__ import annotations

import contextlib
import os
import random
import tempfile
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterator

import numpy as np
import torch

from ..version import __version__


class CheckpointError(RuntimeError):
    """A checkpoint is missing, unreadable, or does not fit what it is loaded into."""


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_PLAIN_MODE = 0o666 & ~_umask()  # read once, at import: the process's umask


def write_atomic(path: str | Path, write: Callable[[BinaryIO], None]) -> Path:
    """Call ``write(file)`` on a temporary file beside ``path``, flush it to disk, then rename it
    over ``path``: a crash leaves the old file or the new one, never half of one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    fh = _ErrorKeepingFile(os.fdopen(fd, "wb"))
    try:
        os.fchmod(fd, _PLAIN_MODE)  # mkstemp's 0600, widened to what open() would give (a report is for sharing)
        with fh.file:
            write(fh)
            fh.flush()
            os.fsync(fh.file.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        if os.path.exists(tmp):
            os.unlink(tmp)
        # torch.save reports a failed write (a full disk) as "unexpected pos ..."; the OSError
        # beneath says what happened -- here with the file it happened to.
        cause = fh.error if fh.error is not None else err
        if isinstance(cause, OSError) and not cause.filename:
            raise OSError(cause.errno, cause.strerror, str(path)) from err
        raise
    return path


@contextlib.contextmanager
def naming(path: str | Path) -> Iterator[None]:
    """An OSError raised inside without a file name (a write or close that hit a full disk) gets
    ``path``: the line the user sees says which file could not be written."""
    try:
        yield
    except OSError as err:
        if err.filename or err.errno is None:
            raise
        raise OSError(err.errno, err.strerror, str(path)) from err


class _ErrorKeepingFile:
    """A binary file that remembers the first OSError its writes raised (see :func:`write_atomic`)."""

    def __init__(self, file: BinaryIO):
        self.file, self.error = file, None

    def write(self, data) -> int:
        try:
            return self.file.write(data)
        except OSError as err:
            self.error = self.error or err
            raise

    def flush(self) -> None:
        try:
            self.file.flush()
        except OSError as err:
            self.error = self.error or err
            raise


def save_atomic(obj: dict, path: str | Path) -> Path:
    """``torch.save(obj)`` to ``path`` atomically (see :func:`write_atomic`)."""
    return write_atomic(path, lambda fh: torch.save(obj, fh))


def load(path: str | Path, map_location: Any = "cpu", resuming: bool = False) -> dict:
    """Load a checkpoint safely (tensors and plain containers only): a checkpoint file, a run
    directory (its ``checkpoint.pt``) or a pretrained folder (``model.safetensors`` + ``config.json``,
    written by ``simsiam export --format hf``). One whose weights hold NaN or inf is refused
    (``resuming``: the line says how a run goes on instead)."""
    path = Path(path)
    if path.is_dir() and not (path / "checkpoint.pt").exists() and is_pretrained_folder(path):
        ckpt = read_pretrained_folder(path)
    else:
        path = path / "checkpoint.pt" if path.is_dir() else path
        if not path.is_file():
            raise CheckpointError(f"no checkpoint at {str(path)!r}: give a checkpoint file or a run directory "
                                  "that holds checkpoint.pt (written by `simsiam pretrain`)")
        ckpt = read_untrusted(path, map_location)
        if not isinstance(ckpt, dict) or "model" not in ckpt or "config" not in ckpt:
            raise CheckpointError(f"{str(path)!r} is not a simsiam checkpoint (no 'model' and 'config' entries)")
    bad = non_finite_tensors(ckpt)
    if bad:
        raise CheckpointError(f"{str(path)!r} is damaged: {_named(bad)} hold NaN or inf values, so nothing computed "
                              f"from it would mean anything; {_what_instead(path, resuming)}")
    return ckpt


def read_untrusted(path: str | Path, map_location: Any = "cpu") -> Any:
    """Whatever a torch file holds, read without unpickling code (tensors, containers, strings and
    numbers only); a file that is not one, is cut short or holds objects raises ``CheckpointError``."""
    path = Path(path)
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except OSError:
        raise  # unreadable file (permissions, I/O): the CLI names the path and the cause
    except Exception as err:  # corrupt file, or one that holds pickled objects we refuse to run
        raise CheckpointError(f"cannot read checkpoint {str(path)!r}: {_why_unreadable(path, err)}") from err


# The entries that hold weights, or state that becomes weights at the next step; the RNG states and
# the epoch's running sums are not weights.
WEIGHT_ENTRIES = ("model", "optimizer", "classifier")


def non_finite_tensors(ckpt: dict) -> list[str]:
    """The names of the floating-point tensors of ``ckpt``'s weight entries that hold a NaN or an
    inf (``backbone.conv1.weight``, ``optimizer.state.3.momentum_buffer``): one pass, a reduction
    per tensor."""
    bad: list[str] = []

    def visit(x, name: str) -> None:
        if isinstance(x, torch.Tensor):
            if (x.is_floating_point() or x.is_complex()) and not bool(torch.isfinite(x).all()):
                bad.append(name)
        elif isinstance(x, dict):
            for k, v in x.items():
                visit(v, f"{name}.{k}" if name else str(k))
        elif isinstance(x, (list, tuple)):
            for i, v in enumerate(x):
                visit(v, f"{name}.{i}")

    for entry in WEIGHT_ENTRIES:
        if entry in ckpt:
            visit(ckpt[entry], "" if entry == "model" else entry)
    return bad


def _named(bad: list[str], shown: int = 3) -> str:
    more = f" and {len(bad) - shown} more" if len(bad) > shown else ""
    return f"{len(bad)} tensor(s) ({', '.join(bad[:shown])}{more})"


def _what_instead(path: Path, resuming: bool) -> str:
    """For a damaged checkpoint: the earlier ones kept beside it (``run.keep_checkpoints``), if any."""
    kept = [p for p in sorted(path.parent.glob(f"{path.stem}-step*{path.suffix}"))
            if p != path and not p.samefile(path)]  # the newest kept copy is a hard link of this very file
    if resuming and kept:
        return (f"resume from an earlier checkpoint kept beside it ({', '.join(p.name for p in kept[-3:])}): copy "
                f"it over {path.name} and resume again, or start the run anew")
    if resuming:
        return "no earlier checkpoint is kept beside it (run.keep_checkpoints): start the run anew"
    if kept:
        return f"use an earlier checkpoint kept beside it ({', '.join(p.name for p in kept[-3:])}) or another run"
    return "use another checkpoint"


def _why_unreadable(path: Path, err: Exception) -> str:
    """torch's error, said in one line a user can act on: which kind of bad file this is."""
    with open(path, "rb") as fh:
        head = fh.read(4)
    if "weights_only" in str(err) or "Unsupported global" in str(err):
        return ("it holds pickled Python objects, which a simsiam checkpoint never does; refused without "
                "running them (the file may be unsafe -- load it only if you trust where it came from)")
    if head[:2] != b"PK" and head[:1] != b"\x80":
        return "it is not a checkpoint file (no torch.save archive; a text or other file?)"
    return "it is truncated or corrupt (an interrupted copy or download?); copy it again or use another checkpoint"


# A pretrained folder in the Hugging Face convention (``simsiam export --format hf``, eval/export_hf.py):
# ``model.safetensors`` holds the whole model's state dict under this package's names, with the
# ``{"format": "pt"}`` metadata the Hub's loaders expect; ``config.json`` the run's config under
# "config", beside a few facts a reader needs without this package; ``README.md`` the model card.
# Safetensors holds tensors only: reading the folder runs no code.
PRETRAINED_WEIGHTS, PRETRAINED_CONFIG, PRETRAINED_FORMAT = "model.safetensors", "config.json", "simsiam-pretrained"


def is_pretrained_folder(path: str | Path) -> bool:
    return (Path(path) / PRETRAINED_WEIGHTS).is_file() and (Path(path) / PRETRAINED_CONFIG).is_file()


def read_pretrained_folder(path: str | Path) -> dict:
    """A pretrained folder shaped as a checkpoint: ``{"model", "config", "epoch", "folder": config.json}``."""
    import json

    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    try:
        info = json.loads((path / PRETRAINED_CONFIG).read_text())
    except (ValueError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{str(path / PRETRAINED_CONFIG)!r} is not valid JSON ({err}); export the run "
                              "again") from err
    if not isinstance(info, dict) or info.get("format") != PRETRAINED_FORMAT or not isinstance(info.get("config"), dict):
        raise CheckpointError(f"{str(path)!r} holds {PRETRAINED_WEIGHTS} and {PRETRAINED_CONFIG} but not in this "
                              f"package's layout (no \"format\": \"{PRETRAINED_FORMAT}\" with a \"config\"); for "
                              "another model's weights use `simsiam import FILE --from torchvision|timm:<name>`")
    try:
        state = load_file(path / PRETRAINED_WEIGHTS)
    except (SafetensorError, ValueError, RuntimeError) as err:
        raise CheckpointError(f"cannot read {str(path / PRETRAINED_WEIGHTS)!r}: it is truncated or corrupt "
                              f"({str(err).splitlines()[0]}); copy the folder again") from err
    return {"model": state, "config": info["config"], "epoch": info.get("epochs_done", 0), "folder": info}


def remove_stale_temporaries(run_dir: Path) -> list[Path]:
    """Delete the temporary files that writers killed mid-write (``kill -9``, a node lost) left in
    ``run_dir``; each may be as large as a checkpoint. Call only where no other writer is running."""
    stale = sorted(Path(run_dir).glob(".*.pt.*.tmp"))
    for tmp in stale:
        tmp.unlink(missing_ok=True)
    return stale


def keep_recent(path: Path, step: int, keep: int) -> None:
    """Keep the ``keep`` latest checkpoints also as ``<name>-step<N>.pt`` beside ``path`` (hard links:
    no extra space until ``path`` is replaced) and delete older ones. ``keep`` 0: none kept."""
    if keep <= 0:
        return
    copy = path.with_name(f"{path.stem}-step{step:09d}{path.suffix}")
    if not copy.exists():
        try:
            os.link(path, copy)
        except OSError:  # a filesystem without hard links
            write_atomic(copy, lambda fh: fh.write(path.read_bytes()))
    for old in sorted(path.parent.glob(f"{path.stem}-step*{path.suffix}"))[:-keep]:
        old.unlink(missing_ok=True)


def rng_state() -> dict:
    """Every RNG the training touches, as tensors and plain values (loadable with weights_only)."""
    np_state = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(_to_tuple(state["python"]))
    kind, keys, *rest = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), *rest))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _to_tuple(x):
    return tuple(_to_tuple(i) for i in x) if isinstance(x, (list, tuple)) else x


def load_model_state(model: torch.nn.Module, state: dict, where: str = "checkpoint") -> None:
    """``load_state_dict`` with an error that says which architecture mismatch happened."""
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise CheckpointError(f"the {where} does not match the model built from its config "
                              f"(wrong architecture or width?): {str(err).splitlines()[0]}") from err


def make_checkpoint(*, model: torch.nn.Module, optimizer: torch.optim.Optimizer, epoch: int, step: int,
                    config: dict, extra: dict | None = None) -> dict:
    return {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "epoch": epoch,  # epochs completed
        "step": step,  # optimiser steps completed
        "rng": rng_state(),
        "config": config,
        "version": __version__,
        **(extra or {}),
    }
