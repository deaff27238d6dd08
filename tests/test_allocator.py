"""The allocator settings: applied once per process on glibc, and left alone when the user opts out."""
import os
import platform
import subprocess
import sys

import pytest

from simsiam.train import allocator

glibc_only = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")

PROBE = ("from simsiam.train.allocator import keep_freed_memory, allocator_state; "
         "print(keep_freed_memory(), keep_freed_memory(), allocator_state())")


def _probe(**env) -> str:
    """The probe's output in a fresh interpreter: the settings are per process and cannot be undone."""
    out = subprocess.run([sys.executable, "-c", PROBE], env={**os.environ, **env}, capture_output=True, text=True,
                         check=True)
    return out.stdout.strip()


@glibc_only
def test_glibc_accepts_both_thresholds_once_per_process():
    assert _probe(SIMSIAM_MALLOC="") == "True True glibc, freed memory kept (mmap threshold 32 MiB)"


@glibc_only
def test_opting_out_leaves_the_system_defaults():
    assert _probe(SIMSIAM_MALLOC="system") == "False False system defaults"


def test_other_c_libraries_are_left_alone(monkeypatch):
    monkeypatch.setattr(allocator, "_applied", False)
    monkeypatch.setattr(allocator.platform, "libc_ver", lambda: ("", ""))
    assert allocator.keep_freed_memory() is False
    assert allocator.allocator_state() == "system defaults"
