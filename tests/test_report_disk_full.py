"""A full disk while a run writes its end outputs: the line names the file; ``--resume auto`` (or
``--resume D``) of the finished run writes the missing outputs again instead of "nothing to do"."""
import errno
import os

import pytest

from simsiam.artifacts import checkpoint as ckpt_io
from simsiam.artifacts import report
from simsiam.artifacts.runlog import read_metrics
from simsiam.cli import main

TINY = ["--preset", "digits", "--quiet", "data.eval_split=", "model.width=4", "model.proj_hidden=32", "model.dim=32",
        "data.train_limit=256", "run.deterministic=true", "--epochs", "1"]


def _disk_full_at(monkeypatch, name: str) -> None:
    """Writing ``name`` fails as a full disk does: an OSError without a file name, from a write."""
    real = report.write_atomic

    def write_atomic(path, write):
        if path.name != name:
            return real(path, write)

        def full(fh):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(path, full)

    monkeypatch.setattr(report, "write_atomic", write_atomic)


@pytest.mark.parametrize("name, missing", [("curves.png", "report.md and curves.png: writing them"),
                                           ("report.md", "report.md: writing it")])  # curves.png is written first
def test_a_full_disk_at_the_report_names_the_file_and_resume_auto_writes_the_outputs_again(tmp_path, capsys,
                                                                                            monkeypatch, name, missing):
    run = tmp_path / "run"
    with monkeypatch.context() as patched:
        _disk_full_at(patched, name)
        assert main(["pretrain", *TINY, "--out-dir", str(run)]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and err[0].startswith(f"simsiam pretrain: error: {run / name}: no space left"), err
    assert "(ENOSPC)" in err[0] and f"the previous checkpoint, {run / 'checkpoint.pt'}, is intact" in err[0]
    assert not (run / name).exists() and not list(run.glob(f".{name}.*"))  # no half-written file left
    assert ckpt_io.load(run)["epoch"] == 1  # the run itself finished
    epochs = [r for r in read_metrics(run) if r.get("kind") == "epoch"]

    assert main(["pretrain", *TINY, "--out-dir", str(run), "--resume", "auto"]) == 0
    out = capsys.readouterr().out
    assert f"{run} holds this run, finished (1 epochs), without its {missing} again" in out
    assert (run / "report.md").is_file() and (run / "curves.png").is_file()
    assert [r for r in read_metrics(run) if r.get("kind") == "epoch"] == epochs  # nothing trained again
    assert (run / "report.md").read_text().count("Baselines under") <= 1

    assert main(["pretrain", *TINY, "--out-dir", str(run), "--resume", "auto"]) == 0
    assert "nothing to do" in capsys.readouterr().out


def test_an_unnamed_write_error_gets_the_file_name(tmp_path):
    path = tmp_path / "metrics.jsonl"
    with pytest.raises(OSError) as err:
        with ckpt_io.naming(path):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    assert err.value.filename == str(path) and err.value.errno == errno.ENOSPC
    with pytest.raises(OSError) as err:  # one that names its file already keeps it
        with ckpt_io.naming(path):
            open(tmp_path / "no" / "such")
    assert err.value.filename == str(tmp_path / "no" / "such")
