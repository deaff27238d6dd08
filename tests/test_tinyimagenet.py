"""The `tinyimagenet` dataset on a small fixture in Tiny-ImageNet's exact layout, untidiness included."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from simsiam.data import load_dataset
from simsiam.data.errors import DatasetNotFound


def _jpeg(path: Path, value: int, mode: str = "RGB") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    shape = (8, 8, 3) if mode == "RGB" else (8, 8)
    Image.fromarray(np.full(shape, value, dtype=np.uint8), mode).save(path, "JPEG")


@pytest.fixture
def tiny(tmp_path) -> Path:
    root = tmp_path / "tiny-imagenet-200"
    root.mkdir()
    (root / "wnids.txt").write_text("n02\nn01")  # unsorted, no final newline
    (root / "words.txt").write_text("n01\tgoldfish, Carassius auratus\nn02\tbullfrog\nn03\tsomething else\n")
    (root / ".DS_Store").write_bytes(b"\x00\x01")
    (root / "train").mkdir()
    (root / "train" / ".DS_Store").write_bytes(b"\x00")
    for wnid, n, value in (("n01", 3, 10), ("n02", 2, 200), ("n09", 1, 120)):  # n09: a folder wnids.txt lacks
        for i in range(n):
            _jpeg(root / "train" / wnid / "images" / f"{wnid}_{i}.JPEG", value, "L" if i == 0 else "RGB")
        (root / "train" / wnid / f"{wnid}_boxes.txt").write_text("x\t0\t0\t8\t8\n")
    for i, value in enumerate((10, 200, 10, 50)):
        _jpeg(root / "val" / "images" / f"val_{i}.JPEG", value)
    # CRLF on some lines, a line for a file that is missing, val_3 without a line, a class not in the set.
    (root / "val" / "val_annotations.txt").write_bytes(
        b"val_0.JPEG\tn01\t0\t0\t8\t8\r\nval_1.JPEG\tn02\t0\t0\t8\t8\nval_2.JPEG\tn01\t0\t0\t8\t8\r\n"
        b"val_9.JPEG\tn02\t0\t0\t8\t8\nval_3.JPEG\tn77\t0\t0\t8\t8\n")
    _jpeg(root / "test" / "images" / "test_0.JPEG", 0)
    return root


def test_train_takes_every_class_folder_and_ignores_stray_files(tiny):
    train = load_dataset("tinyimagenet", "train", str(tiny))
    assert train.num_classes == 3 and train.channels == 3
    assert train.classes == ["goldfish", "bullfrog", "n09"]  # n01, n02, n09: names from words.txt
    assert len(train) == 6 and sorted(train.labels) == [0, 0, 0, 1, 1, 2]
    assert all(p.endswith(".JPEG") for p in train.paths)
    img, label = train[0]  # the first image of n01 is a grayscale JPEG
    assert img.mode == "RGB" and img.size == (8, 8) and label == 0


def test_val_is_labelled_by_its_annotations_crlf_and_all(tiny):
    for split in ("val", "test"):
        val = load_dataset("tinyimagenet", split, str(tiny))
        names = [Path(p).name for p in val.paths]
        assert names == ["val_0.JPEG", "val_1.JPEG", "val_2.JPEG"] and list(val.labels) == [0, 1, 0]
        pixels = np.asarray(val[1][0])
        assert abs(int(pixels.mean()) - 200) < 5  # val_1 is the bullfrog-coloured one


def test_missing_annotations_and_bad_splits_are_clear_errors(tiny):
    (tiny / "val" / "val_annotations.txt").unlink()
    with pytest.raises(DatasetNotFound, match="val_annotations.txt"):
        load_dataset("tinyimagenet", "val", str(tiny))
    with pytest.raises(ValueError, match="valid splits: train, val, test"):
        load_dataset("tinyimagenet", "unlabeled", str(tiny))
    with pytest.raises(DatasetNotFound, match="tiny-imagenet-200"):
        load_dataset("tinyimagenet", "train", str(tiny.parent / "missing"))


def test_knn_and_linear_evaluate_a_run_on_the_split_it_was_monitored_on(tiny, tmp_path, capsys):
    import json

    from simsiam.cli import main

    run = tmp_path / "run"
    shrink = ["model.backbone=resnet18_cifar", "model.width=8", "model.proj_hidden=32", "model.dim=32",
              "data.image_size=8", "optim.epochs=1", "optim.batch_size=3", "monitor.baselines=false",
              f"data.cache_dir={tmp_path / 'cache'}"]
    assert main(["pretrain", "--preset", "tinyimagenet", "--data-dir", str(tiny), "--out-dir", str(run),
                 "--quiet", *shrink]) == 0
    # Both evaluations default to the split the run was monitored on (the preset's val).
    assert main(["knn", str(run), "--k", "2", "--json", str(tmp_path / "knn.json")]) == 0
    knn = json.loads((tmp_path / "knn.json").read_text())
    assert knn["split"] == "val" and knn["queries"] == 3
    assert main(["linear", str(run), "--no-aug", "--epochs", "1", "--json", str(tmp_path / "lin.json")]) == 0
    lin = json.loads((tmp_path / "lin.json").read_text())
    assert lin["split"] == "val" and lin["test_images"] == 3 and "3 val images" in capsys.readouterr().out
