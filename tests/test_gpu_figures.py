"""scripts/gpu_figures.sh end to end on the CPU (its dry run), so that a short GPU window is not
the first time it runs: every part, the per-part time limit, the summary and its files."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from fixtures_data import make_fmnist

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "scripts" / "gpu_figures.sh"


def _run(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHON=sys.executable)
    return subprocess.run(["bash", str(SCRIPT), "--device", "cpu", "--dry-run", *args], capture_output=True,
                          text=True, env=env, cwd=REPO, timeout=900)


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("gpu_figures")
    make_fmnist(root / "fmnist", n_train=200, n_test=60)
    out = root / "out"
    # Compilation takes minutes on a CPU: a 2-second limit checks that an overrunning part is stopped
    # and reported while the parts after it still run.
    proc = _run("--out", str(out), "--data-dir", str(root / "fmnist"), "--work", str(root / "work"),
                "--only", "bench_eager", "bench_compiled", "pretrain", "resume", "--limit", "bench_compiled=2")
    return proc, out


def test_the_dry_run_runs_every_part_and_stops_one_that_overruns(dry_run):
    proc, out = dry_run
    summary = json.loads((out / "summary.json").read_text())
    status = {name: part["status"] for name, part in summary["parts"].items()}
    assert status == {"bench_eager": "ok", "bench_compiled": "timed out after 2.0 s", "pretrain": "ok",
                      "resume": "ok"}, proc.stdout + proc.stderr
    assert proc.returncode == 1  # not every part finished
    assert summary["dry_run"] and summary["device"] == "cpu" and summary["machine"]["torch"]


def test_the_dry_run_writes_the_figures_into_one_small_folder(dry_run):
    _, out = dry_run
    files = sorted(p.name for p in out.iterdir())
    assert files == ["bench_eager.json", "curves.png", "log.txt", "summary.json", "summary.md"]
    bench = json.loads((out / "bench_eager.json").read_text())
    assert {"step", "pipeline", "end_to_end"} <= set(bench["images_per_s"])
    assert bench["batch_size"] == 16 and bench["image_shape"] == [3, 32, 32]
    summary = json.loads((out / "summary.json").read_text())
    pre = summary["pretrain"]
    assert pre["epochs"] >= 1 and set(pre["baselines"]) >= {"raw_pixels", "random_init"}
    assert 0 <= next(iter(pre["knn_top1"].values())) <= 100
    for mode in ("default", "deterministic"):  # on the CPU resume is exact
        assert summary["resume"][mode]["bitwise_equal"], summary["resume"]
    table = (out / "summary.md").read_text()
    assert "| pretrain" in table and "timed out after 2.0 s" in table and "DRY RUN" in table


def test_missing_fashion_mnist_is_one_clear_error(tmp_path):
    proc = _run("--out", str(tmp_path / "out"), "--data-dir", str(tmp_path / "nowhere"))
    assert proc.returncode == 2
    assert "Fashion-MNIST is missing" in proc.stderr and "train-images-idx3-ubyte.gz" in proc.stderr
    assert not (tmp_path / "out").exists()


def test_the_jpeg_decode_part_measures_decode_and_views_on_each_device(tmp_path):
    make_fmnist(tmp_path / "fmnist", n_train=40, n_test=10)
    out = tmp_path / "out"
    proc = _run("--out", str(out), "--data-dir", str(tmp_path / "fmnist"), "--work", str(tmp_path / "work"),
                "--only", "jpeg_decode")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    summary = json.loads((out / "summary.json").read_text())
    j = summary["jpeg_decode"]  # folded into summary.json, as pretrain and resume
    assert set(j["decode_images_per_s"]) == {"cpu"} and j["decode_images_per_s"]["cpu"] > 0
    assert j["views_images_per_s"]["cpu"] > 0 and j["jpegs"] == 32
    assert "| jpeg_decode" in (out / "summary.md").read_text() and not (out / "jpeg_decode.json").exists()
