"""What a run costs besides time: the process's peak memory, for the per-epoch metrics record."""
from __future__ import annotations

import resource
import sys

import torch


def peak_memory(device: torch.device) -> dict[str, float]:
    """``peak_rss_mb``: the peak resident memory of this process so far (host RAM, MiB); on a GPU
    also ``peak_cuda_mb``, the most memory torch's allocator has held on ``device``."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    out = {"peak_rss_mb": round(rss / (2**20 if sys.platform == "darwin" else 2**10), 1)}
    if device.type == "cuda":
        out["peak_cuda_mb"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    return out
