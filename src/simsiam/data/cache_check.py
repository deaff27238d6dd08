"""Whether a decoded-image cache may be used: its index readable, its bytes those written, its sources unchanged.

A cache is two files: ``<stem>.npy`` (the images, uint8) and ``<stem>.json`` (the index). The index
records what the images file must be -- its size and the crc32 of all its bytes -- and a
fingerprint of the source files it was decoded from. :func:`problem` compares both with what is on
disk now and says what is wrong, in words, or "" when the cache can be mapped. Nothing here
unpickles: the index is JSON, and the images file is checked byte for byte before numpy opens it.

What the checks cost, measured on this project's 2-core machine (busy with another job) on
Tiny-ImageNet's training set, 101,000 JPEGs decoded at 64 px into a 1.24 GB cache:

* the crc32 of the whole images file (``zlib.crc32`` in 16 MiB chunks): 0.46-0.57 s when the file
  is in the page cache (2.0-2.5 GiB/s; 1.3 s at a load average of 4), 3.3 s read from disk --
  pages that training then finds in memory. adler32 took 0.79 s and blake2b 1.55 s. Cheap enough
  to check every byte at every open, so a damaged block anywhere is found, not only where a
  sample falls.
* the sources' fingerprint (size, mtime and the first and last 4 KiB of every file): 0.49 s with
  the files in the page cache (1.1 s at a load average of 4), against 0.26 s for size and mtime
  alone; 9.0-9.7 s when none of them is (one small random read per file; 8-16 threads only
  brought it to 6 s). The content part is what catches a file replaced by another of the same
  size and modification time; a change confined to the middle of a file larger than 8 KiB, at
  the same size and time, is the one it does not see.
"""
from __future__ import annotations

import hashlib
import json
import os
import zlib
from pathlib import Path
from typing import Optional, Sequence

from .names import name_bytes

FORMAT = 3  # the index's layout; the cache key holds it too, so an older cache is never looked at
MISSING = "has no index yet"  # a cache never built (or whose build was cut short): the usual first decode
EDGE_BYTES = 4096  # how much of each source file's start and end goes into the fingerprint
CHUNK = 16 * 2**20


def sources_fingerprint(paths: Sequence[str]) -> str:
    """A digest of every file's name, size, modification time and first and last ``EDGE_BYTES``.
    A file that cannot be read counts as its error, so that its reappearance changes the digest."""
    h = hashlib.sha256()
    for path in paths:
        h.update(name_bytes(path) + b"\0")
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError as err:
            h.update(f"error {err.errno}\n".encode())
            continue
        try:
            st = os.fstat(fd)
            edges = os.pread(fd, EDGE_BYTES, 0)
            if st.st_size > EDGE_BYTES:
                edges += os.pread(fd, EDGE_BYTES, st.st_size - EDGE_BYTES)
        except OSError as err:
            h.update(f"error {err.errno}\n".encode())
            continue
        finally:
            os.close(fd)
        h.update(f"{st.st_size}\0{st.st_mtime_ns}\0{zlib.crc32(edges)}\n".encode())
    return h.hexdigest()


def file_checksum(path: str | os.PathLike) -> dict:
    """``{"bytes": size, "crc32": crc}`` of the whole file, read in chunks."""
    crc, size = 0, 0
    buf = bytearray(CHUNK)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as fh:
        while n := fh.readinto(buf):
            crc = zlib.crc32(view[:n], crc)
            size += n
    return {"bytes": size, "crc32": crc}


def read_index(index_path: Path, malformed=None) -> tuple[Optional[dict], str]:
    """``(index, "")``, or ``(None, why)`` when the file is missing (:data:`MISSING`), not JSON, or not an
    index of this format; ``why`` is the rest of a sentence that starts with the cache's name."""
    try:
        text = index_path.read_bytes().decode("ascii")  # json.dump's default output is ASCII
        index = json.loads(text)
    except FileNotFoundError:
        return None, MISSING
    except (OSError, ValueError) as err:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        return None, f"has a damaged index, {index_path.name} ({type(err).__name__}: {str(err)[:80]})"
    why = (malformed or _malformed)(index)  # another index's own checks (the encoded store's), or the cache's
    return (None, f"has a damaged index, {index_path.name} ({why})") if why else (index, "")


def _malformed(index) -> str:
    if not isinstance(index, dict) or index.get("format") != FORMAT:
        return f"not a format-{FORMAT} index"
    kinds = {"labels": list, "paths": list, "unreadable": list, "side": int, "channels": int, "sources": str,
             "checksum": dict}
    for key, kind in kinds.items():
        if not isinstance(index.get(key), kind):
            return f"no valid {key!r}"
    if len(index["labels"]) != len(index["paths"]) or not all(isinstance(y, int) for y in index["labels"]):
        return "labels and paths do not pair up"
    if not all(isinstance(index["checksum"].get(k), int) for k in ("bytes", "crc32")):
        return "no valid checksum"
    sizes = index.get("sizes", [])  # whole photos' upright (height, width); absent for squares
    if not isinstance(sizes, list) or not all(
            isinstance(hw, list) and len(hw) == 2 and all(isinstance(v, int) and v > 0 for v in hw) for hw in sizes):
        return "no valid 'sizes'"
    if "sizes" in index and len(sizes) != len(index["labels"]):
        return "sizes and labels do not pair up"
    return ""


def problem(index_path: Path, images_path: Path, sources: str, side: int, channels: int) -> tuple[Optional[dict], str]:
    """``(index, "")`` when the cache can be used; else ``(None, why)``: :data:`MISSING` for a cache
    never built, otherwise what is wrong with it, as the rest of a sentence that starts with its name."""
    index, why = read_index(index_path)
    if index is None:
        return None, why
    if index["side"] != side or index["channels"] != channels:
        return None, f"has an index, {index_path.name}, of another resolution or channel count"
    if index["sources"] != sources:
        return None, "is stale: its source images changed since they were decoded"
    try:
        size = images_path.stat().st_size
    except FileNotFoundError:
        return None, "has lost its images file"
    expected = index["checksum"]
    if size != expected["bytes"]:
        return None, f"is {size} bytes long where {expected['bytes']} were written (truncated or overwritten)"
    if file_checksum(images_path) != expected:
        return None, "does not match its checksum: its bytes changed since they were written"
    return index, ""
