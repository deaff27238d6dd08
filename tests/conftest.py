import contextlib
import io
import os
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

# Precision pinned: run.amp=auto means fp32 on every CPU in the tests (and their subprocesses), so
# that figures compared in tests do not depend on whether this CPU has native bf16.
os.environ["SIMSIAM_CPU_AUTO_AMP"] = "off"

# One intra-op thread in each test process, and (through OMP_NUM_THREADS) in the processes the tests
# start: the suite's models are tiny, and on a busy 2-core machine two threads spend far longer at
# OpenMP barriers than computing (measured: a 4-step methods run took 70 s instead of 1 s; a linear
# step 70 ms instead of 0.3 ms). The results do not depend on it. The tests that start processes
# (two gloo ranks, torchrun, the scripts) use the second core.
os.environ["OMP_NUM_THREADS"] = "1"
torch.set_num_threads(1)


def _session_cache(tmp_path_factory) -> str:
    return str(tmp_path_factory.getbasetemp() / "cache")


@pytest.fixture(autouse=True)
def private_cache(tmp_path_factory, monkeypatch):
    """Derived data (the baselines) cached per test session, never in the user's ~/.cache."""
    monkeypatch.setenv("SIMSIAM_CACHE_DIR", _session_cache(tmp_path_factory))


@dataclass(frozen=True)
class FinishedRun:
    run_dir: Path
    stdout: str  # what `simsiam pretrain` printed


@pytest.fixture(scope="session")
def finished_digits_run(tmp_path_factory) -> FinishedRun:
    """One finished run of the `digits` preset (2 epochs, kNN monitor, baselines), trained once per
    test process through the command line, for the tests that only read a run. Read it, never
    write into it: the tests share it."""
    from simsiam.cli import main

    run_dir = tmp_path_factory.mktemp("finished") / "run"
    out = io.StringIO()
    with pytest.MonkeyPatch.context() as mp, contextlib.redirect_stdout(out):
        mp.setenv("SIMSIAM_CACHE_DIR", _session_cache(tmp_path_factory))  # before any test's autouse fixture
        assert main(["pretrain", "--preset", "digits", "--out-dir", str(run_dir), "--quiet", "--epochs", "2"]) == 0
    return FinishedRun(run_dir, out.getvalue())


@pytest.fixture
def digits_cfg(tmp_path):
    """The smallest real preset (scikit-learn digits), writing into a temporary run directory."""
    from simsiam import get_preset

    cfg = get_preset("digits")
    cfg.run.out_dir = str(tmp_path / "run")
    cfg.run.quiet = True
    cfg.run.epoch_checkpoint_minutes = 0  # a checkpoint at every epoch's end: resume tests stop after one
    cfg.optim.epochs = 2
    return cfg


@pytest.fixture
def fresh_native_kernel():
    """Forget the loaded augmentation kernel for one test (and again after it, so that later tests
    load it again as they would)."""
    from simsiam.augment import native

    native._load.cache_clear()
    yield
    native._load.cache_clear()


@pytest.fixture
def failing_compiler(tmp_path, monkeypatch, fresh_native_kernel) -> str:
    """$CC is a compiler that fails with a message on stderr (returned), and the kernel's cache is empty."""
    message = "bad-cc: cannot compile here"
    compiler = tmp_path / "bad-cc"
    compiler.write_text(f"#!/bin/sh\necho '{message}' >&2\nexit 1\n")
    compiler.chmod(0o755)
    monkeypatch.setenv("CC", str(compiler))
    monkeypatch.setenv("SIMSIAM_CACHE_DIR", str(tmp_path / "cache"))
    return message
