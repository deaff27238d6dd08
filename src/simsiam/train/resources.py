"""What a run costs besides time: the process's peak memory, for the per-epoch metrics record.

Several runs may share one process (``simsiam reproduce`` trains every row in turn), and
``getrusage``'s peak never goes down, so where Linux allows it the peak is read from
``/proc/self/status`` (``VmHWM``), which :func:`reset_peak_memory` clears at the start of a run.
"""
from __future__ import annotations

import resource
import sys
from pathlib import Path

import torch

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


def _vm_hwm_mb() -> float | None:
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 2**10, 1)  # reported in kB
    except (OSError, ValueError, IndexError):
        pass
    return None


def reset_peak_memory(device: torch.device) -> None:
    """Start counting the peak afresh (host: Linux ``clear_refs`` 5; GPU: torch's allocator stats)."""
    try:
        _CLEAR_REFS.write_text("5")
    except OSError:  # not Linux, or not allowed: the peak then counts from the process's start
        pass
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory(device: torch.device) -> dict[str, float]:
    """``peak_rss_mb``: the peak resident memory (host RAM, MiB) since :func:`reset_peak_memory` (or
    since the process started where that cannot be reset); on a GPU also ``peak_cuda_mb``, the most
    memory torch's allocator has held on ``device``."""
    hwm = _vm_hwm_mb()
    if hwm is None:
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
        hwm = round(rss / (2**20 if sys.platform == "darwin" else 2**10), 1)
    out = {"peak_rss_mb": hwm}
    if device.type == "cuda":
        out["peak_cuda_mb"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    return out
