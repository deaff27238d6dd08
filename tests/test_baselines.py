"""Baselines at the end of every run: raw pixels and the random-init network under the same kNN
protocol, cached per dataset, in the record, the report and the verdict line."""
from __future__ import annotations

import json

import numpy as np
from PIL import Image

import simsiam.eval.baselines as baselines
from simsiam import apply_overrides, get_preset, pretrain
from simsiam.eval.baselines import baseline_knn, cached_baseline_knn, verdict


def _digits(tmp_path, *extra):
    return apply_overrides(get_preset("digits"), ["optim.epochs=1", "data.train_limit=256", "data.eval_limit=100",
                                                  f"run.out_dir={tmp_path / 'run'}", "run.quiet=true", *extra])


def test_a_run_ends_with_its_baselines_in_the_record_and_the_report(tmp_path):
    result = pretrain(_digits(tmp_path))
    base = result.final["baselines"]
    assert set(base) == {"raw_pixels", "standardised_pixels", "random_init"}
    assert all(0 <= v <= 100 for v in base.values())
    records = [json.loads(line) for line in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r for r in records if r["kind"] == "baselines"][0]["raw_pixels"] == base["raw_pixels"]
    assert f"raw pixels {base['raw_pixels']:.2f}%" in (result.run_dir / "report.md").read_text()


def test_monitor_baselines_false_skips_them(tmp_path):
    result = pretrain(_digits(tmp_path, "monitor.baselines=false"))
    assert "baselines" not in result.final


def test_the_baselines_are_measured_once_then_read_from_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SIMSIAM_CACHE_DIR", str(tmp_path / "cache"))
    cfg = _digits(tmp_path)
    calls = []
    real = baselines.baseline_knn
    monkeypatch.setattr(baselines, "baseline_knn", lambda *a, **kw: calls.append(1) or real(*a, **kw))
    first = cached_baseline_knn(cfg, k=20, t=0.1)
    assert cached_baseline_knn(cfg, k=20, t=0.1) == first and len(calls) == 1
    cached_baseline_knn(cfg, k=10, t=0.1)  # another protocol is another measurement
    cfg.data.train_limit = 300  # and so is another subset
    cached_baseline_knn(cfg, k=20, t=0.1)
    assert len(calls) == 3


def test_image_folders_get_pixel_baselines_too(tmp_path):
    for split, n in (("train", 12), ("test", 6)):
        for i in range(n):
            cls = i % 2
            folder = tmp_path / "data" / split / f"c{cls}"
            folder.mkdir(parents=True, exist_ok=True)
            pixels = np.random.default_rng(i).integers(0, 20, (40, 48, 3))
            pixels[:, :24] += 200 if cls == 0 else 0  # two classes that pixels separate: bright left or
            pixels[:, 24:] += 200 if cls == 1 else 0  # bright right half
            Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(folder / f"{i}.png")
    cfg = apply_overrides(get_preset("digits"), ["data.dataset=imagefolder", f"data.data_dir={tmp_path / 'data'}",
                                                 "data.image_size=40", "model.in_channels=3"])
    base = baseline_knn(cfg, k=3, t=0.1)
    assert base["raw_pixels"] == 100.0 and base["standardised_pixels"] == 100.0
    assert 0 <= base["random_init"] <= 100


def test_the_verdict_says_plainly_when_the_representation_is_below_the_pixels():
    base = {"raw_pixels": 78.9, "standardised_pixels": 81.8, "random_init": 56.9}
    assert "BELOW the pixels" in verdict(80.8, base) and "optim.epochs" in verdict(80.8, base)
    assert "BELOW" not in verdict(85.0, base) and "raw pixels in [0, 1] 78.90%" in verdict(85.0, base)
