"""Fault injection: killed writers, full disks, bad checkpoint files, bad input on the command line.

Each case checks what a user sees: the exit code and the single line on stderr (``main([...])``
in-process), and that nothing on disk was lost.
"""
import errno
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch

from simsiam.artifacts import checkpoint as ckpt_io
from simsiam.cli import main
from simsiam.train import step as step_module
from simsiam.train.stop import EXIT_STOPPED


TINY = ["--preset", "digits", "--quiet", "data.eval_split=", "model.width=4", "model.proj_hidden=32", "model.dim=32",
        "data.train_limit=256", "run.deterministic=true"]


def _cli(capsys, *argv) -> tuple[int, list[str], str]:
    """Exit code, the lines on stderr, and stdout of ``simsiam ARGV``."""
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, [line for line in captured.err.splitlines() if line.strip()], captured.out


def _one_error(capsys, *argv, code: int = 2) -> str:
    got, lines, _ = _cli(capsys, *argv)
    assert got == code, (got, lines)
    assert len(lines) == 1, lines
    return lines[0]


# --------------------------------------------------------------------- checkpoint writes
def test_sigkill_during_a_checkpoint_write_leaves_the_previous_one_loadable(tmp_path):
    target = tmp_path / "checkpoint.pt"
    ckpt_io.save_atomic({"model": {"w": torch.ones(3)}, "config": {}}, target)
    writer = textwrap.dedent(f"""
        import time, torch
        from simsiam.artifacts import checkpoint as ckpt_io

        def slow(fh):  # a large checkpoint on a slow disk: many writes, the process killed between them
            for _ in range(10000):
                fh.write(b"x" * 4096)
                time.sleep(0.001)

        ckpt_io.write_atomic({str(target)!r}, slow)
    """)
    proc = subprocess.Popen([sys.executable, "-c", writer], env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    deadline = time.monotonic() + 60
    while not list(tmp_path.glob(".checkpoint.pt.*.tmp")) and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.2)  # well inside the write
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert torch.equal(ckpt_io.load(target)["model"]["w"], torch.ones(3))  # the old checkpoint, whole
    stale = list(tmp_path.glob(".checkpoint.pt.*.tmp"))
    assert stale and stale[0].stat().st_size > 0  # the killed writer's leftover...
    assert ckpt_io.remove_stale_temporaries(tmp_path) == stale  # ...removed at the next start
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]


def _fail_writes_after(monkeypatch, calls_ok: int, err_no: int = errno.ENOSPC):
    """Make every checkpoint write after the first ``calls_ok`` fail as a full disk does."""
    real_save = ckpt_io.save_atomic
    calls = []

    def failing_write(self, data):
        if len(calls) > calls_ok:
            self.error = self.error or OSError(err_no, os.strerror(err_no))
            raise self.error
        return self.file.write(data)

    def counting_save(obj, path):
        calls.append(path)
        return real_save(obj, path)

    monkeypatch.setattr(ckpt_io._ErrorKeepingFile, "write", failing_write)
    monkeypatch.setattr(ckpt_io, "save_atomic", counting_save)


def test_full_disk_during_training_is_one_line_and_keeps_the_previous_checkpoint(tmp_path, capsys, monkeypatch):
    _fail_writes_after(monkeypatch, calls_ok=1)  # epoch 1's checkpoint is written, epoch 2's is not
    line = _one_error(capsys, "pretrain", *TINY, "--epochs", "2", "--out-dir", str(tmp_path / "run"),
                      "run.epoch_checkpoint_minutes=0")
    assert "no space left on the device" in line and "(ENOSPC)" in line
    assert f"{tmp_path / 'run' / 'checkpoint.pt'}" in line and "is intact" in line
    assert ckpt_io.load(tmp_path / "run")["epoch"] == 1
    assert not list((tmp_path / "run").glob(".checkpoint.pt.*"))


def test_read_only_output_is_one_line(tmp_path, capsys, monkeypatch):
    _fail_writes_after(monkeypatch, calls_ok=0, err_no=errno.EROFS)
    line = _one_error(capsys, "pretrain", *TINY, "--epochs", "1", "--out-dir", str(tmp_path / "run"))
    assert "read-only file system" in line and "(EROFS)" in line and "intact" not in line  # there was none


# --------------------------------------------------------------------- bad checkpoint files
def _pickled_object(path):
    class Evil:
        def __reduce__(self):
            return (print, ("this ran",))

    torch.save({"model": {}, "config": {}, "x": Evil()}, path)


@pytest.mark.parametrize("kind, make, expected", [
    ("text", lambda p: p.write_text("hello\n" * 20), "not a checkpoint file"),
    ("truncated", lambda p: p.write_bytes(_valid_bytes(p)[:300]), "truncated or corrupt"),
    ("pickled", _pickled_object, "pickled Python objects"),
    ("foreign", lambda p: torch.save({"weights": torch.ones(2)}, p), "not a simsiam checkpoint"),
    ("empty", lambda p: p.write_bytes(b""), "not a checkpoint file"),
])
def test_each_bad_checkpoint_kind_gets_its_own_line(tmp_path, capsys, kind, make, expected):
    bad = tmp_path / f"{kind}.pt"
    make(bad)
    line = _one_error(capsys, "knn", str(bad))
    assert expected in line and str(bad) in line, line
    assert "this ran" not in capsys.readouterr().out


def _valid_bytes(path) -> bytes:
    ckpt_io.save_atomic({"model": {"w": torch.zeros(1000)}, "config": {}}, path)
    return path.read_bytes()


# --------------------------------------------------------------------- stop signals from the CLI
def _signal_after(monkeypatch, steps: dict):
    """After step s (counted from 1), send the signal ``steps[s]`` to this process."""
    real_call = step_module.TrainStep.__call__

    def call_then_signal(self, views, step):
        out = real_call(self, views, step)
        if step + 1 in steps:
            os.kill(os.getpid(), steps.pop(step + 1))
        return out

    monkeypatch.setattr(step_module.TrainStep, "__call__", call_then_signal)


def test_sigterm_from_the_cli_checkpoints_says_how_to_resume_and_exits_75(tmp_path, capsys, monkeypatch):
    run = tmp_path / "run"
    _signal_after(monkeypatch, {3: signal.SIGUSR1})
    code, lines, _ = _cli(capsys, "pretrain", *TINY, "--epochs", "2", "--out-dir", str(run))
    assert code == EXIT_STOPPED == 75
    assert lines[0].startswith("SIGUSR1 received")
    assert lines[-1] == (f"stopped by SIGUSR1 at step 3 (epoch 2, batch 1/2); checkpoint written. Resume with: "
                         f"simsiam pretrain --resume {run}")
    assert ckpt_io.load(run)["position"]["batches"] == 1
    code, lines, _ = _cli(capsys, "pretrain", "--resume", str(run), "--quiet")
    assert code == 0 and ckpt_io.load(run)["step"] == 4


def test_a_second_signal_exits_at_once_without_a_checkpoint(tmp_path, capsys, monkeypatch):
    run = tmp_path / "run"
    real_call = step_module.TrainStep.__call__

    def signal_twice(self, views, step):
        if step == 0:
            os.kill(os.getpid(), signal.SIGTERM)
            os.kill(os.getpid(), signal.SIGTERM)
        return real_call(self, views, step)

    monkeypatch.setattr(step_module.TrainStep, "__call__", signal_twice)
    code, lines, _ = _cli(capsys, "pretrain", *TINY, "--epochs", "1", "--out-dir", str(run))
    assert code == 128 + signal.SIGTERM
    assert lines[-1] == "simsiam pretrain: interrupted; no checkpoint was written"
    assert not (run / "checkpoint.pt").exists()


# --------------------------------------------------------------------- bad input on the command line
@pytest.mark.parametrize("argv, expected", [
    (["optim.base_lr=nan"], "optim.base_lr=nan is not a finite number"),
    (["optim.base_lr=-0.25"], "optim.base_lr must not be negative, got -0.25"),
    (["optim.weight_decay=inf"], "optim.weight_decay=inf is not a finite number"),
    (["--device", "gpu"], "run.device='gpu' is not a device"),
    (["model.width=[1"], "is not valid YAML"),
    (["optim.lr=0.1"], "unknown config key 'optim.lr'"),
    (["run.checkpoint_every_steps=-1"], "run.checkpoint_every_steps must not be negative"),
])
def test_bad_settings_are_refused_in_one_line_before_anything_runs(tmp_path, capsys, argv, expected):
    line = _one_error(capsys, "pretrain", *TINY, "--out-dir", str(tmp_path / "run"), *argv)
    assert expected in line, line
    assert not (tmp_path / "run").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_unavailable_device_is_an_error_not_the_cpu(tmp_path, capsys):
    line = _one_error(capsys, "pretrain", *TINY, "--out-dir", str(tmp_path / "run"), "--device", "cuda")
    assert "run.device=cuda: this process sees 0 CUDA device(s)" in line


def test_the_native_kernel_asked_for_where_it_cannot_be_built(tmp_path, capsys, failing_compiler):
    line = _one_error(capsys, "pretrain", *TINY, "--out-dir", str(tmp_path / "run"), "data.augment_kernel=native")
    assert "data.augment_kernel=native, but the kernel is unavailable" in line and "data.augment_kernel=torch" in line


def test_yaml_with_a_tab_and_an_output_dir_below_a_file(tmp_path, capsys):
    (tmp_path / "tab.yaml").write_text("optim:\n\tbase_lr: 0.1\n")
    line = _one_error(capsys, "pretrain", *TINY, "--config", str(tmp_path / "tab.yaml"))
    assert "is not valid YAML" in line and "line 2" in line and "tabs" in line
    (tmp_path / "file").write_text("x")
    line = _one_error(capsys, "pretrain", *TINY, "--out-dir", str(tmp_path / "file" / "run"))
    assert "a part of the path is a file" in line and "(ENOTDIR)" in line


def test_resume_applies_what_it_can_and_refuses_the_rest(tmp_path, capsys):
    run = tmp_path / "run"
    assert _cli(capsys, "pretrain", *TINY, "--epochs", "1", "--out-dir", str(run))[0] == 0
    line = _one_error(capsys, "pretrain", "--resume", str(run), "optim.base_lr=0.1", "model.width=8")
    assert line.startswith(f"simsiam pretrain: error: cannot resume {run} with other settings: ")
    assert "model.width=8 (the run has 4)" in line and "optim.base_lr=0.1 (the run has 0.06)" in line
    assert _cli(capsys, "pretrain", "--resume", str(run), "--epochs", "2", "run.log_every=1",
                "data.augment_kernel=torch")[0] == 0
    saved = ckpt_io.load(run)
    assert saved["epoch"] == 2 and saved["config"]["run"]["log_every"] == 1  # all three applied
    assert saved["config"]["data"]["augment_kernel"] == "torch"


def test_resume_auto_starts_resumes_finishes_and_refuses_another_config(tmp_path, capsys, monkeypatch):
    run = str(tmp_path / "run")
    _signal_after(monkeypatch, {1: signal.SIGTERM})
    assert _cli(capsys, "pretrain", *TINY, "--epochs", "2", "--out-dir", run, "--resume", "auto")[0] == EXIT_STOPPED
    assert _cli(capsys, "pretrain", *TINY, "--epochs", "2", "--out-dir", run, "--resume", "auto")[0] == 0
    assert ckpt_io.load(run)["step"] == 4
    code, _, out = _cli(capsys, "pretrain", *TINY, "--epochs", "2", "--out-dir", run, "--resume", "auto")
    assert code == 0 and out == f"{run} already holds this run, finished (2 epochs); nothing to do\n"
    line = _one_error(capsys, "pretrain", *TINY, "--epochs", "2", "--out-dir", run, "--resume", "auto", "model.dim=64")
    assert "holds a run of another config: model.dim (32 there, 64 here)" in line


def test_knn_reports_the_k_it_used_and_refuses_other_channel_counts(tmp_path, capsys):
    run = tmp_path / "run"
    assert _cli(capsys, "pretrain", *TINY, "--epochs", "1", "--out-dir", str(run))[0] == 0
    assert main(["knn", str(run), "--k", "100000"]) == 0
    out = capsys.readouterr().out
    assert "k=100000 is more than the bank's 1497 images: k=1497 is used" in out and "| 1497 |" in out
    from fixtures_data import make_imagefolder

    make_imagefolder(tmp_path / "rgb")
    line = _one_error(capsys, "knn", str(run), "--dataset", "imagefolder", "--data-dir", str(tmp_path / "rgb"))
    assert "has 3-channel images but the checkpoint's backbone takes 1 channel(s)" in line
