"""What a run prints and how often it checkpoints: --quiet, a log file, many short epochs.

A folder of a few hundred images has one-step epochs; under --quiet such a run must not print a
line per step or per epoch, nor write a checkpoint per epoch. The clock is the tests' own
(``time.monotonic`` in the two modules that throttle), so nothing here depends on the machine's speed.
"""
import re
import time

from simsiam.artifacts import checkpoint as ckpt_io
from simsiam.artifacts import runlog
from simsiam.cli import main
from simsiam.train import stop


# 256 digits at batch 128: two steps an epoch; kNN at epochs 3 and 6.
TINY = ["--preset", "digits", "--epochs", "6", "data.train_limit=256", "data.eval_limit=64", "optim.batch_size=128",
        "model.width=4", "run.log_every=1", "monitor.every=3", "monitor.baselines=false"]


class _Clock:
    """``time`` with a monotonic clock that moves ``tick`` seconds at each reading."""

    def __init__(self, tick: float):
        self.now, self.tick = 0.0, tick

    def monotonic(self) -> float:
        self.now += self.tick
        return self.now

    def __getattr__(self, name):
        return getattr(time, name)


def _run(tmp_path, monkeypatch, capsys, tick: float, *args: str):
    """The run's stdout lines, stderr, and the epochs of the checkpoints it wrote, in order."""
    clock = _Clock(tick)
    monkeypatch.setattr(runlog, "time", clock)
    monkeypatch.setattr(stop, "time", clock)
    saved = []
    real_save = ckpt_io.save_atomic

    def counting_save(obj, path):
        saved.append(obj["epoch"])
        return real_save(obj, path)

    monkeypatch.setattr(ckpt_io, "save_atomic", counting_save)
    assert main(["pretrain", *TINY, "--out-dir", str(tmp_path / "run"), *args]) == 0
    out, err = capsys.readouterr()
    return out.splitlines(), err, saved


def _epoch_lines(lines: list[str]) -> list[str]:
    return [line.split()[1] for line in lines if re.match(r"epoch \d+/\d+ ", line)]


def test_quiet_prints_the_run_line_the_knn_epochs_and_the_final_line(tmp_path, monkeypatch, capsys):
    lines, err, saved = _run(tmp_path, monkeypatch, capsys, 0.0, "--quiet")  # a run shorter than a minute
    assert lines[0].startswith(f"run {tmp_path / 'run'}: simsiam")
    assert not [line for line in lines if " step " in line]  # no step lines
    assert _epoch_lines(lines) == ["3/6", "6/6"]  # the kNN evaluations (the last is one)
    assert "kNN" in lines[-2] and lines[-1].startswith("done: 6 epochs")
    assert "\r" not in err and "it/s" not in err  # no progress bar
    assert saved == [6]  # one checkpoint, at the end


def test_quiet_prints_an_epoch_line_and_checkpoints_once_a_minute(tmp_path, monkeypatch, capsys):
    lines, _, saved = _run(tmp_path, monkeypatch, capsys, 61.0, "--quiet")  # every reading a minute later
    assert _epoch_lines(lines) == [f"{e}/6" for e in range(1, 7)]
    assert saved == [1, 2, 3, 4, 5, 6]
    assert ckpt_io.load(tmp_path / "run" / "checkpoint.pt")["epoch"] == 6


def test_a_log_file_gets_step_lines_at_log_every_and_every_epoch_line(tmp_path, monkeypatch, capsys):
    # Under pytest stderr is not a terminal: no bar, a line every run.log_every steps instead.
    lines, err, saved = _run(tmp_path, monkeypatch, capsys, 0.0, "--epochs", "2", "run.log_every=2",
                             "run.epoch_checkpoint_minutes=0")
    assert [line.split()[:4] for line in lines if " step " in line] == [["epoch", "1", "step", "2"],
                                                                      ["epoch", "2", "step", "4"]]
    assert _epoch_lines(lines) == ["1/2", "2/2"]
    assert "\r" not in err and "it/s" not in err
    assert saved == [1, 2]  # run.epoch_checkpoint_minutes=0: at every epoch's end
