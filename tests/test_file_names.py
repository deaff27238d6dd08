"""File names that are not UTF-8 (``bad\\xff\\xfename.png``, legal on Linux): read like any other file,
written into the cache's key and index, embed's index.csv and unreadable.txt, predict's CSV and
similar's CSVs as their own bytes (data/names.py), and read back from them to the same file."""
from __future__ import annotations

import csv
import io
import os
import sys
from pathlib import Path

import numpy as np
import pytest
from fixtures_checkpoints import make_checkpoint_file
from PIL import Image

from simsiam.cli import main
from simsiam.data import load_dataset
from simsiam.data.cache import cached

ODD = b"bad\xff\xfename.png"  # not UTF-8

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="file names are bytes on Linux (macOS wants UTF-8)")


def _folder(root: Path, broken_odd: bool = False) -> Path:
    """Two class folders of small grey images, one of them under a name that is not UTF-8; with
    ``broken_odd`` a second such name holds no image."""
    rng = np.random.default_rng(0)
    for i in range(6):
        (root / "ab"[i % 2]).mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (10, 10), dtype=np.uint8)).save(root / "ab"[i % 2] / f"{i}.png")
    with open(os.path.join(os.fsencode(root / "a"), ODD), "wb") as fh:
        Image.fromarray(rng.integers(0, 256, (10, 10), dtype=np.uint8)).save(fh, format="PNG")
    if broken_odd:
        with open(os.path.join(os.fsencode(root / "b"), b"broken\xe9.png"), "wb") as fh:
            fh.write(b"not an image")
    return root


def _odd_path(root: Path) -> bytes:
    return os.path.join(os.fsencode(root / "a"), ODD)


def test_the_cache_decodes_and_maps_a_folder_with_such_a_name(tmp_path):
    root = _folder(tmp_path / "data")
    files = load_dataset("folder", "train", str(root))
    odd = [os.fsencode(p) for p in files.paths].index(_odd_path(root))
    data = cached(files, 8, tmp_path / "cache", log=lambda _: None, workers=1, progress=False)
    assert len(data) == 7 and os.fsencode(data.paths[odd]) == _odd_path(root)
    again = cached(load_dataset("folder", "train", str(root)), 8, tmp_path / "cache", log=lambda _: None)
    assert again.paths == data.paths and Path(again.paths[odd]).is_file()  # the index gives the same name back


def _rows(path: Path) -> list[list[bytes]]:
    """A CSV's rows, each cell as bytes (the file is UTF-8 except inside names that are not)."""
    text = path.read_bytes().decode("utf-8", "surrogateescape")
    return [[os.fsencode(cell) for cell in row] for row in csv.reader(io.StringIO(text))]


def test_embed_and_similar_write_such_a_name_as_its_bytes_and_read_it_back(tmp_path):
    root = _folder(tmp_path / "data", broken_odd=True)
    checkpoint, _, _ = make_checkpoint_file(tmp_path / "checkpoint.pt")
    out = tmp_path / "embedding"
    assert main(["embed", str(checkpoint), "--data", str(root), "--out", str(out), "--quiet"]) == 0
    rows = _rows(out / "index.csv")
    assert [r[1] for r in rows if r[1].endswith(ODD)] == [_odd_path(root)] and len(rows) == 1 + 7
    assert (out / "unreadable.txt").read_bytes() == os.path.join(os.fsencode(root / "b"), b"broken\xe9.png") + b"\n"
    assert np.load(out / "embeddings.npy").shape[0] == 7
    found = tmp_path / "similar"
    assert main(["similar", str(checkpoint), "--embeddings", str(out), "--out", str(found), "--k", "2",
                 "--duplicates", "-1", "--quiet"]) == 0
    neighbours = _rows(found / "neighbours.csv")
    assert _odd_path(root) in {r[0] for r in neighbours[1:]} and _odd_path(root) in {r[2] for r in neighbours[1:]}
    assert _odd_path(root) in {r[1] for r in _rows(found / "duplicates.csv")[1:]}


def test_predict_writes_such_a_name_as_its_bytes(tmp_path):
    import torch

    from simsiam.eval.classifier import Classifier, save_classifier
    from simsiam.eval.pretrained import load_pretrained

    root = _folder(tmp_path / "data")
    checkpoint, _, cfg = make_checkpoint_file(tmp_path / "checkpoint.pt")
    method, _ = load_pretrained(checkpoint)
    classifier = Classifier(method.backbone, 2)
    with torch.no_grad():
        classifier.head.bias.copy_(torch.tensor([0.0, 1.0]))
    model = save_classifier(tmp_path / "model.pt", method, classifier, cfg.to_dict(),
                            {"classes": ["a", "b"], "image_size": 8})
    assert main(["predict", str(model), "--data", str(root), "--out", str(tmp_path / "p.csv")]) == 0
    rows = _rows(tmp_path / "p.csv")
    odd = next(r for r in rows if r[0] == _odd_path(root))
    assert odd[1:2] == [b"b"] and odd[3] == b"a"  # predicted b; its folder names the truth, a


def test_a_folder_run_with_such_a_name_trains_on_the_cache(tmp_path, monkeypatch):
    """Used to stop the whole run: "'utf-8' codec can't encode characters ... surrogates not allowed"."""
    monkeypatch.setenv("SIMSIAM_CACHE_DIR", str(tmp_path / "cache"))
    root = _folder(tmp_path / "data", broken_odd=True)
    assert main(["pretrain", "--preset", "digits", "--quiet", "data.eval_split=", "model.width=4",
                 "model.proj_hidden=32", "model.dim=32", "data.dataset=folder", "optim.batch_size=4", "--epochs", "1",
                 "--data-dir", str(root), "--out-dir", str(tmp_path / "run")]) == 0
    assert (tmp_path / "run" / "checkpoint.pt").is_file()
