"""The command line as a user meets it: a smoke run, listings, and the documented errors."""
import json

import pytest
from PIL import Image

from simsiam.cli import main


def test_pretrain_smoke_on_digits_then_knn(tmp_path, finished_digits_run):
    out = finished_digits_run.run_dir  # `simsiam pretrain --preset digits --quiet --epochs 2` (conftest.py)
    for name in ("metrics.jsonl", "curves.png", "report.md", "checkpoint.pt", "config.json"):
        assert (out / name).is_file()
    assert "kNN accuracy" in finished_digits_run.stdout.splitlines()[-1]
    rc = main(["knn", str(out), "--k", "5", "20", "--t", "0.1", "--json", str(tmp_path / "knn.json")])
    assert rc == 0
    res = json.loads((tmp_path / "knn.json").read_text())
    assert set(res["accuracy"]) == {"k=5,t=0.1", "k=20,t=0.1"}
    assert res["queries"] == 300 and res["bank_size"] == 1497


def test_presets_listing(capsys):
    assert main(["presets"]) == 0
    text = capsys.readouterr().out
    assert "fmnist" in text and "cifar10" in text and "imagenet" in text
    assert main(["presets", "cifar10"]) == 0
    assert "base_lr: 0.03" in capsys.readouterr().out


def test_a_reader_that_stops_early_is_no_error():
    import subprocess
    import sys

    # `simsiam presets | head -1`: the pipe closes while the listing is still being written.
    proc = subprocess.Popen([sys.executable, "-m", "simsiam", "presets"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    proc.stdout.readline()
    proc.stdout.close()
    assert proc.wait(timeout=120) == 0
    errors = proc.stderr.read().decode()
    assert "EPIPE" not in errors and "Broken pipe" not in errors, errors


def test_bad_config_key_is_a_clear_error(tmp_path, capsys):
    rc = main(["pretrain", "--preset", "digits", "--out-dir", str(tmp_path / "r"), "optim.lrr=1"])
    assert rc == 2
    err = capsys.readouterr().err
    assert "optim.lrr" in err and "base_lr" in err


def test_missing_data_names_the_dataset_and_where_it_looked(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("SIMSIAM_CIFAR10_DIR", str(tmp_path / "nowhere"))
    rc = main(["pretrain", "--preset", "cifar10", "--out-dir", str(tmp_path / "r"), "--data-dir", str(tmp_path / "nope")])
    assert rc == 2
    err = capsys.readouterr().err
    assert "cifar10" in err and str(tmp_path / "nope") in err


def test_corrupt_image_is_reported_and_skipped(tmp_path, capsys):
    """A user's own folder with one broken file: training goes on and the epoch reports the skip."""
    import numpy as np

    folder = tmp_path / "imgs" / "sub"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(40):
        Image.fromarray(rng.integers(0, 255, (20, 20, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    out = tmp_path / "run"
    rc = main(["pretrain", "--preset", "digits", "--out-dir", str(out), "--quiet", "--data-dir", str(tmp_path / "imgs"),
               "data.dataset=folder", "data.eval_split=", "data.image_size=16", "aug.recipe=cifar",
               "model.in_channels=3", "optim.batch_size=8", "optim.epochs=1", "data.num_workers=0",
               "data.pipeline=per_image"])  # the files read every epoch (the decoded cache: below)
    assert rc == 0
    captured = capsys.readouterr()
    assert "broken.jpg" in captured.err and "skipped 1 unreadable" in captured.err
    epoch = [json.loads(l) for l in open(out / "metrics.jsonl") if '"kind": "epoch"' in l][0]
    assert epoch["skipped_images"] == 1
    # On the default (cached, batched) path the broken file is named once, when the folder is decoded.
    rc = main(["pretrain", "--preset", "digits", "--out-dir", str(tmp_path / "cached"), "--quiet", "--data-dir",
               str(tmp_path / "imgs"), "data.dataset=folder", "data.eval_split=", "data.image_size=16",
               "aug.recipe=cifar", "model.in_channels=3", "optim.batch_size=8", "optim.epochs=1"])
    assert rc == 0
    captured = capsys.readouterr()
    assert "broken.jpg" in captured.err and "left out 1 unreadable" in captured.err


@pytest.mark.parametrize("command", ["pretrain", "knn", "presets"])
def test_help(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    assert command in capsys.readouterr().out


def test_overrides_may_come_after_options():
    from simsiam.cli import parse_args

    args = parse_args(["pretrain", "optim.epochs=1", "--out-dir", "runs/x", "data.train_limit=64", "--quiet"])
    assert args.overrides == ["optim.epochs=1", "data.train_limit=64"] and args.out_dir == "runs/x"
    args = parse_args(["reproduce", "stopgrad", "--preset", "digits", "optim.epochs=2"])
    assert args.overrides == ["optim.epochs=2"] and args.preset == "digits"
    with pytest.raises(SystemExit):  # anything else left over is still an error
        parse_args(["pretrain", "--out-dir", "runs/x", "--no-such-flag"])
