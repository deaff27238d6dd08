"""Finding a dataset's files among candidate directories, with helpful errors."""

from __future__ import annotations

import os
from typing import Iterable, Optional, Sequence

from .errors import DatasetNotFound


def candidate_dirs(
    data_dir: Optional[str],
    env_var: str,
    subdirs: Sequence[str] = (),
    system_dirs: Sequence[str] = (),
) -> list[str]:
    """Directories to search, in priority order, without duplicates.

    ``data_dir`` or else ``$env_var`` is tried as given and with every one of
    ``subdirs`` appended (the layouts other tools extract archives into);
    ``system_dirs`` (e.g. where a distribution package installs the data) come
    last, only when no ``data_dir`` is given: a directory the user named is
    never silently replaced by another copy.
    """
    if data_dir:
        bases, system_dirs = [os.path.expanduser(data_dir)], ()
    else:
        bases = [os.path.expanduser(b) for b in (os.environ.get(env_var),) if b]
    dirs = [d for base in bases for d in (base, *(os.path.join(base, s) for s in subdirs))]
    dirs += list(system_dirs)
    return list(dict.fromkeys(dirs))  # dedupe, keeping the first occurrence's position


def _first_existing(directory: str, alternatives: Sequence[str]) -> Optional[str]:
    for name in alternatives:
        path = os.path.join(directory, name)
        if os.path.isfile(path):
            return path
    return None


def _describe(required: Sequence[Sequence[str]]) -> str:
    return ", ".join(" or ".join(alts) for alts in required)


def not_found(dataset: str, what: str, searched: Iterable[tuple[str, str]], how_to_get: str) -> DatasetNotFound:
    """Build the DatasetNotFound error: what was sought, each (place, why not), the remedy."""
    searched = list(searched)
    where = ("searched " + ", ".join(f"{place} ({why})" for place, why in searched) if searched
             else "no directory to search: data.data_dir is not set")
    # One line, as every error of the command line is (commands/errors.py)
    return DatasetNotFound(f"dataset {dataset!r}: {what} not found; {where}. To get it: {how_to_get}",
                           dataset, [place for place, _ in searched])


def find_files(
    dataset: str,
    split: str,
    dirs: Sequence[str],
    required: Sequence[Sequence[str]],
    how_to_get: str,
) -> list[str]:
    """Return the paths of ``required`` files from the first directory holding all of them.

    Each entry of ``required`` lists acceptable names for one file (e.g. the
    gzipped and the plain variant). Raises DatasetNotFound naming every
    directory searched and what each one lacked.
    """
    searched = []
    for directory in dirs:
        if not os.path.isdir(directory):
            searched.append((directory, "does not exist"))
            continue
        found = [_first_existing(directory, alts) for alts in required]
        if all(found):
            return found  # type: ignore[return-value]
        missing = [alts for alts, path in zip(required, found) if path is None]
        searched.append((directory, f"missing {_describe(missing)}"))
    raise not_found(dataset, f"files for split {split!r} ({_describe(required)})", searched, how_to_get)


def require_dir(dataset: str, data_dir: Optional[str], how_to_get: str) -> str:
    """Return ``data_dir`` when it is an existing directory, else raise DatasetNotFound."""
    if not data_dir:
        raise not_found(dataset, "image directory", [], how_to_get)
    path = os.path.expanduser(data_dir)
    if not os.path.isdir(path):
        why = "is not a directory" if os.path.exists(path) else "does not exist"
        raise not_found(dataset, "image directory", [(path, why)], how_to_get)
    return path


def check_split(dataset: str, split: str, valid: Sequence[str]) -> None:
    """Raise ValueError naming the valid splits when ``split`` is not one of them."""
    if split not in valid:
        raise ValueError(f"dataset {dataset!r} has no split {split!r}; valid splits: {', '.join(valid)}")
