"""Preemption: a stop signal at any step, then resume, trains bitwise as an uninterrupted run.

The signal is a real SIGTERM sent to this process right after a chosen step (the handler of
``train/stop.py`` only sets a flag, so the step's end is the same as a scheduler's SIGTERM would
find it). The steps are drawn at random with a fixed seed, so a failure is reproducible.
"""
import copy
import json
import os
import random
import signal

import pytest
import torch

from fixtures_gloo import join, spawn

from simsiam import pretrain
from simsiam.artifacts import checkpoint as ckpt_io
from simsiam.train import step as step_module
from simsiam.train.stop import StopRequest


def _tiny(cfg, tmp_path, name, **changes):
    cfg = copy.deepcopy(cfg)
    cfg.model.width, cfg.model.proj_hidden, cfg.model.dim = 4, 32, 32
    cfg.data.train_limit, cfg.data.eval_split = 640, ""  # 5 steps of batch 128 an epoch
    cfg.optim.epochs = 3
    cfg.run.deterministic = True
    cfg.run.out_dir = str(tmp_path / name)
    for key, value in changes.items():
        section, field = key.split("__")
        setattr(getattr(cfg, section), field, value)
    return cfg


def _sigterm_after(monkeypatch, stop_at: set):
    """Send SIGTERM to this process after each step whose count (from the run's start) is in ``stop_at``."""
    real_call = step_module.TrainStep.__call__

    def call_then_signal(self, views, step):
        out = real_call(self, views, step)
        if step + 1 in stop_at:
            stop_at.discard(step + 1)
            os.kill(os.getpid(), signal.SIGTERM)
        return out

    monkeypatch.setattr(step_module.TrainStep, "__call__", call_then_signal)


def _assert_same_weights(a_dir, b_dir):
    a, b = ckpt_io.load(a_dir), ckpt_io.load(b_dir)
    assert a["step"] == b["step"] and a["epoch"] == b["epoch"]
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    for k, v in a["optimizer"]["state"].items():
        assert torch.equal(v["momentum_buffer"], b["optimizer"]["state"][k]["momentum_buffer"])


def _stopped_and_resumed(cfg, monkeypatch, stops: list[int]) -> list:
    """Run ``cfg`` stopping after each step of ``stops`` (a SIGTERM each), resuming after each stop."""
    _sigterm_after(monkeypatch, set(stops))
    results = [pretrain(cfg)]
    for _ in stops:
        assert results[-1].stopped_early == "signal", results[-1]
        results.append(pretrain(copy.deepcopy(cfg), resume=True))
    return results


@pytest.mark.parametrize("pipeline", ["batched", "per_image"])
def test_sigterm_at_random_steps_then_resume_equals_uninterrupted_run(tmp_path, digits_cfg, monkeypatch, pipeline):
    straight = _tiny(digits_cfg, tmp_path, "straight", data__pipeline=pipeline, data__num_workers=0)
    pretrain(straight)
    rng = random.Random(16 if pipeline == "batched" else 17)
    stops = sorted(rng.sample(range(1, 15), 2))  # two stops among the 15 steps, mid-epoch or at its end
    stopped = _tiny(digits_cfg, tmp_path, "stopped", data__pipeline=pipeline, data__num_workers=0)
    results = _stopped_and_resumed(stopped, monkeypatch, stops)
    assert results[-1].stopped_early == "" and results[-1].epochs_done == 3
    _assert_same_weights(tmp_path / "straight", tmp_path / "stopped")
    # The epoch records, sums carried over a stop included, are those of the uninterrupted run.
    def epochs(d):
        return [(r["epoch"], r["loss"], r["z_std"]) for r in map(json.loads, open(d / "metrics.jsonl"))
                if r["kind"] == "epoch"]
    assert epochs(tmp_path / "stopped") == epochs(tmp_path / "straight")
    reasons = [r for r in map(json.loads, open(tmp_path / "stopped" / "metrics.jsonl")) if r["kind"] == "stopped"]
    assert [r["step"] for r in reasons] == stops and {r["reason"] for r in reasons} == {"SIGTERM"}


def test_a_stop_at_an_epochs_end_checkpoints_there_though_the_last_checkpoint_is_recent(tmp_path, digits_cfg,
                                                                                       monkeypatch):
    """Epoch-end checkpoints wait a minute after the last (run.epoch_checkpoint_minutes, not written
    here by itself in a run of seconds); a stop does not wait."""
    straight = _tiny(digits_cfg, tmp_path, "straight")
    pretrain(straight)
    stopped = _tiny(digits_cfg, tmp_path, "stopped", run__epoch_checkpoint_minutes=1.0)  # the default
    results = _stopped_and_resumed(stopped, monkeypatch, [5])  # SIGTERM after the last step of epoch 1
    assert results[0].epochs_done == 1
    assert [r["step"] for r in map(json.loads, open(tmp_path / "stopped" / "metrics.jsonl"))
            if r["kind"] == "stopped"] == [5]
    assert results[-1].epochs_done == 3
    _assert_same_weights(tmp_path / "straight", tmp_path / "stopped")


def test_stop_writes_resume_line_and_mid_epoch_position(tmp_path, digits_cfg):
    cfg = _tiny(digits_cfg, tmp_path, "run")
    stop = StopRequest()
    stop.request("test")  # already requested: the run stops after its first step
    result = pretrain(cfg, stop=stop)
    assert result.stopped_early == "signal" and result.epochs_done == 0
    assert "--resume" in result.stop_line and str(tmp_path / "run") in result.stop_line
    saved = ckpt_io.load(tmp_path / "run")
    assert saved["epoch"] == 0 and saved["step"] == 1 and saved["position"]["batches"] == 1
    assert not (tmp_path / "run" / "report.md").exists()  # outputs are for finished runs


def test_kstep_stops_only_between_blocks(tmp_path, digits_cfg, monkeypatch):
    """k-step caches targets for k steps: a stop inside a block waits for the block's end, so the
    resume is exact; a checkpoint inside a block (made by hand) is refused."""
    straight = _tiny(digits_cfg, tmp_path, "straight", hypothesis__kstep=2)
    straight.method = "simsiam_kstep"
    pretrain(straight)
    stopped = copy.deepcopy(straight)
    stopped.run.out_dir = str(tmp_path / "stopped")
    results = _stopped_and_resumed(stopped, monkeypatch, [3])
    saved_positions = [r for r in map(json.loads, open(tmp_path / "stopped" / "metrics.jsonl"))
                       if r["kind"] == "stopped"]
    assert [(r["step"], r["batches_done"]) for r in saved_positions] == [(4, 4)]  # waited for the block of 2
    assert results[-1].epochs_done == 3
    _assert_same_weights(tmp_path / "straight", tmp_path / "stopped")

    saved = ckpt_io.load(tmp_path / "stopped")
    saved["epoch"], saved["position"] = 1, {**_position_after(3), "z_dim": 32}
    ckpt_io.save_atomic(saved, tmp_path / "stopped" / "checkpoint.pt")
    with pytest.raises(ckpt_io.CheckpointError, match="cannot continue exactly"):
        pretrain(copy.deepcopy(stopped), resume=True)


def _position_after(batches: int) -> dict:
    return {"batches": batches, "steps": batches, "loss_sum": torch.zeros(()), "std_sum": torch.zeros(()),
            "skipped": [], "seconds": 0.0, "lr": 0.0}


def test_periodic_checkpoints_keep_the_last_n(tmp_path, digits_cfg):
    cfg = _tiny(digits_cfg, tmp_path, "run", run__checkpoint_every_steps=3, run__keep_checkpoints=2)
    pretrain(cfg)
    kept = sorted(p.name for p in (tmp_path / "run").glob("checkpoint-step*.pt"))
    # Checkpoints at steps 3, 5 (epoch end), 8, 10 (epoch end), 13, 15 (the end): 3 steps after the last.
    assert kept == ["checkpoint-step000000013.pt", "checkpoint-step000000015.pt"]
    assert ckpt_io.load(tmp_path / "run" / kept[0])["position"]["batches"] == 3  # step 13: epoch 3, batch 3


# ------------------------------------------------------------------ two gloo processes
def _distributed_worker(rank, port, straight, stopped):
    """Straight through; then a SIGTERM reaching rank 1 alone after step 7; then resumed. Rank 0
    must stop at the same step (or it would wait in DDP's all-reduce for rank 1 forever)."""
    from simsiam.parallel import distributed as dist
    from simsiam.train import stop as stop_module

    join(rank, port)
    real_call, real_poll = step_module.TrainStep.__call__, stop_module.POLL_EVERY

    def call_then_signal(self, views, step):
        out = real_call(self, views, step)
        if rank == 1 and step + 1 == 7:
            os.kill(os.getpid(), signal.SIGTERM)
        return out

    # Both put back afterwards: the worker process serves the next test too (fixtures_gloo.py).
    stop_module.POLL_EVERY = 2  # agree every 2 steps, so that the stop lands mid-epoch in this small run
    try:
        pretrain(straight)
        step_module.TrainStep.__call__ = call_then_signal
        try:
            result = pretrain(stopped)
        finally:
            step_module.TrainStep.__call__ = real_call
        assert result.stopped_early == "signal", (rank, result)
        if rank == 0:
            torch.save(ckpt_io.load(stopped.run.out_dir)["step"],
                       os.path.join(stopped.run.out_dir, "..", "stopped_at.pt"))
        pretrain(stopped, resume=True)
    finally:
        stop_module.POLL_EVERY = real_poll
    dist.cleanup()


def test_two_processes_agree_on_the_stop_step_and_resume_bitwise(tmp_path, digits_cfg):
    straight = _tiny(digits_cfg, tmp_path, "straight", run__device="cpu")
    stopped = _tiny(digits_cfg, tmp_path, "stopped", run__device="cpu")
    spawn(_distributed_worker, straight, stopped)
    assert torch.load(tmp_path / "stopped_at.pt", weights_only=True) == 8  # the first agreement after step 7 (epoch 2, batch 3)
    _assert_same_weights(tmp_path / "straight", tmp_path / "stopped")


def _unreadable_worker(rank, port, cfg):
    """Rank 1's first local batch is wholly unreadable: both ranks must leave that step out together."""
    from simsiam.data import loaders
    from simsiam.parallel import distributed as dist

    join(rank, port)
    real_item = loaders._MultiView.__getitem__
    served = []

    def unreadable_first_batch_on_rank_1(self, key):
        served.append(key)
        if rank == 1 and len(served) <= cfg.optim.batch_size // 2:
            return f"unreadable-{key[1]}.png"  # what the dataset returns for a file it cannot decode
        return real_item(self, key)

    loaders._MultiView.__getitem__ = unreadable_first_batch_on_rank_1
    try:
        result = pretrain(cfg)
    finally:
        loaders._MultiView.__getitem__ = real_item  # the worker process serves the next test too
    assert result.epochs_done == 1 and ckpt_io.load(cfg.run.out_dir)["step"] == 4 if rank == 0 else True
    dist.cleanup()


def test_a_wholly_unreadable_batch_on_one_rank_does_not_hang_the_other(tmp_path, digits_cfg):
    cfg = _tiny(digits_cfg, tmp_path, "run", run__device="cpu", data__pipeline="per_image", data__num_workers=0,
                optim__epochs=1)
    spawn(_unreadable_worker, cfg)  # would wait for ever in DDP's all-reduce without the agreement
    saved = ckpt_io.load(tmp_path / "run")
    assert saved["step"] == 4  # 5 batches, the first left out by both ranks
    records = [json.loads(line) for line in open(tmp_path / "run" / "metrics.jsonl")]
    assert [r["skipped_images"] for r in records if r["kind"] == "epoch"] == [64]


def test_under_torchrun_the_first_periodic_checkpoint_is_at_the_first_poll_due(monkeypatch):
    """Every 2 steps, polled every POLL_EVERY=10 under torchrun: the first checkpoint is at step 10,
    not 20 (the interval counts from the run's first step, not from its first poll)."""
    from simsiam.parallel import distributed as dist_module
    from simsiam.train import stop as stop_module

    monkeypatch.setattr(dist_module, "is_enabled", lambda: True)
    monkeypatch.setattr(stop_module.Poll, "_agree", staticmethod(lambda flags: flags))
    poll = stop_module.Poll(StopRequest(), every_steps=2)
    saves = []
    for step in range(1, 31):
        if poll.after_step(step)[0]:
            saves.append(step)
            poll.saved(step)
    assert saves == [10, 20, 30]
