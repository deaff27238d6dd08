"""The per-run peak memory: several runs share one process under ``simsiam reproduce``."""
import os
from pathlib import Path

import pytest
import torch

from simsiam.train.resources import peak_memory, reset_peak_memory

CPU = torch.device("cpu")


@pytest.mark.skipif(not os.access("/proc/self/clear_refs", os.W_OK), reason="needs Linux's resettable VmHWM")
def test_the_peak_counts_again_from_a_reset():
    reset_peak_memory(CPU)
    before = peak_memory(CPU)["peak_rss_mb"]
    big = torch.ones(400 * 2**20 // 4)  # 400 MiB, touched
    during = peak_memory(CPU)["peak_rss_mb"]
    del big
    assert during >= before + 350
    assert peak_memory(CPU)["peak_rss_mb"] >= before + 350  # a peak stays after the memory is freed
    reset_peak_memory(CPU)
    assert peak_memory(CPU)["peak_rss_mb"] < during - 300


def test_peak_falls_back_to_getrusage_without_proc(monkeypatch):
    import simsiam.train.resources as resources

    monkeypatch.setattr(resources, "_STATUS", Path("/nonexistent/status"))
    monkeypatch.setattr(resources, "_CLEAR_REFS", Path("/nonexistent/clear_refs"))
    reset_peak_memory(CPU)  # no error where the reset is impossible
    assert peak_memory(CPU)["peak_rss_mb"] > 10
