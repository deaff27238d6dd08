"""``simsiam embed`` writes embeddings.npy, unreadable.txt and index.csv all or nothing (artifacts/together.py)."""
from __future__ import annotations

import errno

import numpy as np
import pytest
from fixtures_checkpoints import make_checkpoint_file
from PIL import Image

import simsiam.artifacts.together as together
from simsiam.artifacts.together import write_together
from simsiam.cli import main


def _disk_full_at_write(monkeypatch, n: int) -> None:
    """The ``n``-th file flushed to disk (1-based) meets a full disk."""
    real, calls = together.os.fsync, []

    def fsync(fd):
        calls.append(fd)
        if len(calls) == n:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(fd)

    monkeypatch.setattr(together.os, "fsync", fsync)


def test_a_failed_write_renames_nothing_and_leaves_no_temporary(tmp_path, monkeypatch):
    (tmp_path / "a.txt").write_text("old a")
    _disk_full_at_write(monkeypatch, 2)
    with pytest.raises(OSError) as err:
        write_together({tmp_path / "a.txt": lambda fh: fh.write(b"new a"),
                        tmp_path / "b.txt": lambda fh: fh.write(b"new b")})
    assert err.value.filename == str(tmp_path / "b.txt")  # the file is named, not "a file"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"] and (tmp_path / "a.txt").read_text() == "old a"
    monkeypatch.undo()
    write_together({tmp_path / "a.txt": lambda fh: fh.write(b"new a"), tmp_path / "b.txt": lambda fh: fh.write(b"new b")})
    assert (tmp_path / "a.txt").read_text() == "new a" and (tmp_path / "b.txt").read_text() == "new b"


def test_embed_that_fails_while_writing_leaves_no_partial_output(tmp_path, monkeypatch, capsys):
    """Before: a partial embeddings.npy beside a header-only index.csv."""
    folder = tmp_path / "images"
    folder.mkdir()
    for i in range(4):
        Image.fromarray(np.full((10, 10), 60 * i, dtype=np.uint8)).save(folder / f"{i}.png")
    checkpoint, _, _ = make_checkpoint_file(tmp_path / "checkpoint.pt")
    out = tmp_path / "out"
    _disk_full_at_write(monkeypatch, 3)  # embeddings.npy and unreadable.txt written, then index.csv fails
    assert main(["embed", str(checkpoint), "--data", str(folder), "--out", str(out), "--quiet"]) == 2
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line.startswith(f"simsiam embed: error: {out / 'index.csv'}: no space left on the device"), line
    assert not out.exists() or list(out.iterdir()) == []
    monkeypatch.undo()
    assert main(["embed", str(checkpoint), "--data", str(folder), "--out", str(out), "--quiet"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["embeddings.npy", "index.csv", "unreadable.txt"]
    assert np.load(out / "embeddings.npy").shape[0] == 4
