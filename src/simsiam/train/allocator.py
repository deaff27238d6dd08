"""Keep freed memory for reuse: glibc's allocator would otherwise return every large temporary to
the kernel and fault it in again on the next step.

A training step on CPU allocates and frees the same large temporaries every step (a 64-pixel
colour batch of 128 is 6 MB per intermediate). glibc serves blocks above its mmap threshold (at
first 128 KiB, raised only by a freed block's size) with fresh ``mmap`` calls, and ``munmap``
hands them back on free, so each step pays page faults to zero the same memory again; freed
heap tops above the trim threshold are returned the same way. Measured on the 2-core AVX2 machine
of docs/PERFORMANCE.md, the batched augmentation of the ``tinyimagenet`` preset took about 30%
less time with the two thresholds below, and the training step a few per cent less.

It is what setting ``MALLOC_MMAP_THRESHOLD_`` and ``MALLOC_TRIM_THRESHOLD_`` before launch does,
applied from inside the process. Memory freed below the 32 MiB threshold stays with the process
(its resident size stays at its peak), which a training run reaches again every step anyway.
``SIMSIAM_MALLOC=system`` leaves glibc's defaults; other C libraries are left alone.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform

# mallopt's parameter numbers (<malloc.h>) and our values. 32 MiB is glibc's largest mmap threshold
# on 64-bit systems: blocks above it (feature banks, datasets) are still mapped and unmapped.
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
MMAP_THRESHOLD = 32 * 1024 * 1024
TRIM_THRESHOLD = 1024 * 1024 * 1024

OPT_OUT = "SIMSIAM_MALLOC"

_applied = False


def keep_freed_memory() -> bool:
    """Raise glibc's mmap and trim thresholds for this process; True when they are in force.

    Idempotent. False (and nothing changed) off glibc, or with ``SIMSIAM_MALLOC=system``.
    """
    global _applied
    if _applied:
        return True
    if os.environ.get(OPT_OUT, "").lower() == "system" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    # mallopt returns 1 on success; a fixed mmap threshold also stops glibc's own adjustment of it.
    _applied = bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
    return _applied


def allocator_state() -> str:
    """One phrase for reports: which allocator settings this process runs with."""
    if _applied:
        return f"glibc, freed memory kept (mmap threshold {MMAP_THRESHOLD >> 20} MiB)"
    return "system defaults"
