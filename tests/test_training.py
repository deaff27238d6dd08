"""End-to-end behaviour of pretraining: outputs, checkpoints, exact resume, divergence, collapse."""
import copy
import json
import math

import pytest
import torch

from simsiam import apply_overrides, get_preset, pretrain
from simsiam.artifacts import checkpoint as ckpt_io
from simsiam.train.pretrain import TrainingDiverged


def test_run_writes_metrics_plots_report_and_checkpoint(finished_digits_run):
    run = finished_digits_run.run_dir  # the digits preset, 2 epochs (conftest.py)
    for name in ("config.json", "metrics.jsonl", "checkpoint.pt", "curves.png", "report.md"):
        assert (run / name).is_file(), name
    epochs = [json.loads(l) for l in open(run / "metrics.jsonl") if '"epoch"' in l and '"kind": "epoch"' in l]
    assert [r["epochs_done"] for r in epochs] == [1, 2]
    for r in epochs:
        assert math.isfinite(r["loss"]) and 0 < r["z_std_sqrt_d"] < 2 and 0 <= r["knn_acc"] <= 100
    steps = [json.loads(l) for l in open(run / "metrics.jsonl") if '"kind": "step"' in l]
    assert steps and all({"loss", "lr", "images_per_s"} <= set(s) for s in steps)
    saved = ckpt_io.load(run / "checkpoint.pt")
    assert saved["epoch"] == 2 and saved["version"] and saved["config"]["preset"] == "digits"
    assert {"python", "numpy", "torch"} <= set(saved["rng"])
    assert "kNN" in (run / "report.md").read_text()


def test_checkpoint_round_trip_and_atomic_write(tmp_path):
    state = {"model": {"w": torch.arange(6.0).reshape(2, 3)}, "config": {"a": 1}, "epoch": 3, "rng": ckpt_io.rng_state()}
    path = ckpt_io.save_atomic(state, tmp_path / "c.pt")
    back = ckpt_io.load(path)
    assert torch.equal(back["model"]["w"], state["model"]["w"]) and back["epoch"] == 3
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]  # no temporary file left behind
    ckpt_io.set_rng_state(back["rng"])  # the saved RNG states restore


def test_loading_refuses_pickled_objects(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("this ran",))

    torch.save({"model": {}, "config": {}, "x": Evil()}, tmp_path / "evil.pt")
    with pytest.raises(ckpt_io.CheckpointError, match="cannot read"):
        ckpt_io.load(tmp_path / "evil.pt")
    with pytest.raises(ckpt_io.CheckpointError, match="no checkpoint"):
        ckpt_io.load(tmp_path / "missing.pt")


def test_resume_equals_uninterrupted_run(tmp_path, digits_cfg):
    digits_cfg.data.eval_split = ""  # monitors do not touch training state; skip them for speed
    straight = digits_cfg
    straight.run.out_dir = str(tmp_path / "straight")
    pretrain(straight)

    import copy

    first = copy.deepcopy(digits_cfg)
    first.run.out_dir = str(tmp_path / "resumed")
    first.optim.epochs = 1
    # The schedule must be that of a 2-epoch run: stop after epoch 1 by resuming with epochs=2.
    first_cfg = copy.deepcopy(first)
    first_cfg.optim.epochs = 2
    _run_one_epoch_of(first_cfg)
    resumed = copy.deepcopy(first_cfg)
    pretrain(resumed, resume=True)

    a = ckpt_io.load(tmp_path / "straight" / "checkpoint.pt")["model"]
    b = ckpt_io.load(tmp_path / "resumed" / "checkpoint.pt")["model"]
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def _run_one_epoch_of(cfg):
    """Run ``cfg`` but interrupt it after its first epoch's checkpoint, as a crash would."""
    import simsiam.train.pretrain as train

    real_save = ckpt_io.save_atomic

    class Interrupted(Exception):
        pass

    def save_then_stop(obj, path):
        real_save(obj, path)
        raise Interrupted

    train.ckpt_io.save_atomic = save_then_stop
    try:
        with pytest.raises(Interrupted):
            pretrain(cfg)
    finally:
        train.ckpt_io.save_atomic = real_save


def test_nan_loss_stops_with_clear_message_and_keeps_last_checkpoint(digits_cfg, monkeypatch):
    digits_cfg.data.eval_split = ""
    digits_cfg.run.log_every = 1
    _run_one_epoch_of(digits_cfg)
    good = ckpt_io.load(digits_cfg.run.out_dir)
    from simsiam.methods.simsiam import SimSiam

    real_step = SimSiam.training_step

    def nan_step(self, views):
        out = real_step(self, views)
        return {**out, "loss": out["loss"] * float("nan")}

    monkeypatch.setattr(SimSiam, "training_step", nan_step)
    with pytest.raises(TrainingDiverged, match="nan"):
        pretrain(digits_cfg, resume=True)
    after = ckpt_io.load(digits_cfg.run.out_dir)
    assert after["epoch"] == good["epoch"] == 1
    for k in good["model"]:
        assert torch.equal(good["model"][k], after["model"][k])


def test_stop_on_collapse_warns_and_stops_after_the_epoch(digits_cfg, capsys):
    # A threshold above any healthy value makes the first epoch count as collapsed; whether a real
    # run collapses is tested with the ablations (no stop-gradient).
    digits_cfg.optim.epochs = 3
    digits_cfg.monitor.collapse_threshold = 5.0
    digits_cfg.monitor.stop_on_collapse = True
    digits_cfg.data.eval_split = ""
    result = pretrain(digits_cfg)
    assert result.stopped_early == "collapse" and result.epochs_done == 1
    assert "collapsing" in capsys.readouterr().err
    assert ckpt_io.load(result.run_dir)["epoch"] == 1


def test_existing_run_directory_is_not_overwritten(digits_cfg):
    digits_cfg.optim.epochs = 1
    digits_cfg.data.eval_split = ""
    pretrain(digits_cfg)
    with pytest.raises(FileExistsError, match="--resume"):
        pretrain(digits_cfg)


def test_resuming_a_finished_run_says_so_and_trains_nothing(tmp_path, capsys):
    cfg = apply_overrides(get_preset("digits"), ["optim.epochs=1", "data.train_limit=256", "data.eval_split=",
                                                 "optim.batch_size=64", f"run.out_dir={tmp_path / 'run'}"])
    first = pretrain(copy.deepcopy(cfg))
    capsys.readouterr()
    again = pretrain(copy.deepcopy(cfg), resume=True)
    out = capsys.readouterr().out
    assert "finished its 1 epochs" in out and not any(line.startswith("resuming") for line in out.splitlines())
    assert again.epochs_done == first.epochs_done == 1
