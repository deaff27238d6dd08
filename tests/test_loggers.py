"""run.loggers: CSV files and TensorBoard event files, read back; the list field's parsing."""
import copy
import csv
import json

import pytest
from test_training import _run_one_epoch_of

from simsiam import ConfigError, apply_overrides, get_preset, pretrain, resolve


def _small(cfg, loggers):
    cfg.run.loggers = loggers
    cfg.data.train_limit, cfg.optim.batch_size, cfg.run.log_every = 64, 16, 2  # 4 steps an epoch
    cfg.data.eval_limit, cfg.monitor.knn_k = 50, 5
    return cfg


def _csv(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def _jsonl(run_dir, kind):
    return [json.loads(line) for line in open(run_dir / "metrics.jsonl") if json.loads(line)["kind"] == kind]


def test_loggers_parse_from_the_command_line_and_are_checked():
    cfg = get_preset("digits")
    assert cfg.run.loggers == ["jsonl"]
    apply_overrides(cfg, ["run.loggers=[jsonl,tensorboard]"])
    assert cfg.run.loggers == ["jsonl", "tensorboard"]
    apply_overrides(cfg, ["run.loggers=csv,jsonl"])
    assert cfg.run.loggers == ["csv", "jsonl"]
    apply_overrides(cfg, ["run.loggers=[csv,wandb]"])
    with pytest.raises(ConfigError, match="run.loggers: 'wandb' not valid; choose any of: jsonl, csv, tensorboard"):
        resolve(cfg)


def test_csv_logger_mirrors_metrics_jsonl_and_survives_a_resume(tmp_path, digits_cfg):
    cfg = _small(digits_cfg, ["jsonl", "csv"])
    straight = copy.deepcopy(cfg)
    straight.run.out_dir = str(tmp_path / "straight")
    run_dir = pretrain(straight).run_dir
    epochs = _csv(run_dir / "metrics_epoch.csv")
    assert [float(r["loss"]) for r in epochs] == [r["loss"] for r in _jsonl(run_dir, "epoch")]
    assert all(float(r["knn_acc"]) >= 0 for r in epochs)
    steps = _csv(run_dir / "metrics_step.csv")
    assert [int(r["step"]) for r in steps] == [2, 4, 6, 8]

    resumed = copy.deepcopy(cfg)
    resumed.run.out_dir = str(tmp_path / "resumed")
    _run_one_epoch_of(resumed)
    pretrain(resumed, resume=True)
    assert [r["step"] for r in _csv(tmp_path / "resumed" / "metrics_step.csv")] == [r["step"] for r in steps]
    assert len(_csv(tmp_path / "resumed" / "metrics_epoch.csv")) == 2


def test_tensorboard_gets_scalars_the_views_grid_and_the_projector(tmp_path, digits_cfg):
    event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    cfg = _small(digits_cfg, ["jsonl", "tensorboard"])
    plain = _small(copy.deepcopy(cfg), ["jsonl"])
    plain.run.out_dir = str(tmp_path / "plain")
    run_dir = pretrain(cfg).run_dir
    # Drawing the views grid and the projector's features leaves training as it was.
    assert [r["loss"] for r in _jsonl(run_dir, "epoch")] == [r["loss"] for r in _jsonl(pretrain(plain).run_dir, "epoch")]
    tb = event_accumulator.EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"images": 0, "scalars": 0})
    tb.Reload()
    tags = tb.Tags()
    for tag in ("step/loss", "step/lr", "step/images_per_s", "epoch/loss", "epoch/z_std_sqrt_d", "epoch/knn_acc"):
        assert tag in tags["scalars"], tag
    epochs = _jsonl(run_dir, "epoch")
    assert [e.value for e in tb.Scalars("epoch/loss")] == pytest.approx([r["loss"] for r in epochs])
    assert [e.step for e in tb.Scalars("step/loss")] == [2, 4, 6, 8]
    views = tb.Images("augmented_views")
    assert len(views) == 1 and views[0].width > 0
    projector = (run_dir / "tensorboard" / "projector_config.pbtxt").read_text()
    assert "knn_test_set" in projector and "sprite" in projector
    metadata = next((run_dir / "tensorboard").rglob("metadata.tsv")).read_text().split()
    assert len(metadata) == 50 and set(metadata) <= {str(i) for i in range(10)}
