"""One process per run directory: a second ``pretrain`` (a new run, ``--resume``, ``--resume auto``) or a
second ``finetune`` in the same folder is refused with one line naming the holder; the lock is released
on every way out, and a lock left by a killed process is taken over."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from fixtures_gloo import join, spawn

from simsiam.artifacts import checkpoint as ckpt_io
from simsiam.artifacts.run_lock import LOCK_NAME, DirectoryBusy, DirectoryLock
from simsiam.cli import main
from simsiam.train import step as step_module

TINY = ["--preset", "digits", "--quiet", "data.eval_split=", "model.width=4", "model.proj_hidden=32", "model.dim=32",
        "data.train_limit=256", "run.deterministic=true"]


def _refused(capsys, *argv) -> str:
    code = main(list(argv))
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1, (code, lines)
    return lines[0]


def _hold_in_child(directory: Path) -> int:
    """A forked child that takes the lock and waits (until killed); its pid once it holds it."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(read)
            DirectoryLock(directory).acquire()
            os.write(write, b"1")
            while True:
                time.sleep(1)
        finally:
            os._exit(0)
    os.close(write)
    assert os.read(read, 1) == b"1"
    os.close(read)
    return pid


def test_a_second_process_is_refused_with_the_holder_named_and_a_killed_holder_is_taken_over(tmp_path, capsys):
    run = tmp_path / "run"
    pid = _hold_in_child(run)
    try:
        line = _refused(capsys, "pretrain", *TINY, "--epochs", "1", "--out-dir", str(run))
        assert f"{run} is in use by another run: process {pid} on {socket.gethostname()}, started " in line
        assert f"kill -TERM {pid}" in line and "choose another --out-dir" in line
        assert sorted(p.name for p in run.iterdir()) == [LOCK_NAME]  # nothing of the run written
    finally:
        os.kill(pid, signal.SIGKILL)  # no chance to release: the kernel drops its lock with the process
        os.waitpid(pid, 0)
    assert main(["pretrain", *TINY, "--epochs", "1", "--out-dir", str(run)]) == 0  # the stale lock taken over
    assert ckpt_io.load(run)["epoch"] == 1
    DirectoryLock(run).acquire().release()  # released at the run's end


def test_the_lock_is_held_while_training_and_released_when_the_run_raises(tmp_path, monkeypatch):
    run = tmp_path / "run"
    seen = []

    def step_then_look(self, views, step):
        with pytest.raises(DirectoryBusy) as busy:  # another open of the lock file, as another process's would be
            DirectoryLock(run).acquire()
        seen.append(str(busy.value))
        raise RuntimeError("a bug in the step")

    monkeypatch.setattr(step_module.TrainStep, "__call__", step_then_look)
    with pytest.raises(RuntimeError, match="a bug in the step"):
        main(["pretrain", *TINY, "--epochs", "1", "--out-dir", str(run)])
    assert f"process {os.getpid()}" in seen[0]
    DirectoryLock(run).acquire().release()  # the exception released it


def test_resume_of_a_run_still_training_is_refused(tmp_path, capsys):
    """A real second process: a run stopped (SIGSTOP) mid-epoch after its first checkpoints."""
    run = tmp_path / "run"
    argv = [*TINY, "data.train_limit=1024", "--epochs", "2", "run.checkpoint_every_steps=1", "run.log_every=1"]
    argv.remove("--quiet")  # step lines, to know where it is
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "simsiam", "pretrain", *argv, "--out-dir", str(run)],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
    try:
        for line in proc.stdout:
            if " step 3 " in line:
                proc.send_signal(signal.SIGSTOP)  # holds its lock, checkpoint of step 2 on disk
                break
        records = (run / "metrics.jsonl").read_text()
        for args in (["--resume", str(run)], [*argv, "--out-dir", str(run), "--resume", "auto"],
                     [*argv, "--out-dir", str(run)]):
            line = _refused(capsys, "pretrain", *args)
            assert f"is in use by another run: process {proc.pid} on " in line and " pretrain " in line, line
        assert (run / "metrics.jsonl").read_text() == records  # nothing written by the refused ones
    finally:
        proc.kill()
        proc.wait()
    assert main(["pretrain", *argv, "--out-dir", str(run), "--resume", "auto"]) == 0  # the killed run's lock: taken
    assert ckpt_io.load(run)["epoch"] == 2


def test_a_second_finetune_in_one_folder_is_refused(tmp_path, capsys):
    from fixtures_checkpoints import make_checkpoint_file

    ckpt, _, _ = make_checkpoint_file(tmp_path / "run" / "checkpoint.pt", width=4)
    out = tmp_path / "ft"
    pid = _hold_in_child(out)
    try:
        line = _refused(capsys, "finetune", str(ckpt), "--out", str(out), "--label-seeds", "0",
                        "--contenders", "knn")
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    assert f"{out} is in use by another fine-tune: process {pid}" in line and "choose another --out" in line
    assert not (out / "settings.json").exists()


def _locked_worker(rank, port, out_dir):
    join(rank, port)
    from simsiam.config.presets import get_preset
    from simsiam.parallel import distributed as dist
    from simsiam.train.pretrain import pretrain

    cfg = get_preset("digits")
    cfg.model.width, cfg.data.train_limit, cfg.optim.epochs = 4, 256, 1
    cfg.run.out_dir, cfg.run.quiet, cfg.run.device = out_dir, True, "cpu"
    try:
        with pytest.raises(DirectoryBusy, match="in use by another run"):  # on both ranks: none left waiting
            pretrain(cfg)
    finally:
        dist.cleanup()


def test_under_ddp_rank_0_holds_the_lock_and_every_rank_is_refused_together(tmp_path):
    run = tmp_path / "run"
    with DirectoryLock(run):
        spawn(_locked_worker, str(run))
