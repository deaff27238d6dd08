"""The finite-gradient guard (train/finite_guard.py): a step with non-finite gradients is skipped and
counted; under run.amp=auto it moves the run from bf16 to fp32 for good, under run.amp=bf16 a few in a
row stop it, and the ranks of a torchrun job decide together.

bf16 on CPU is a path only some CPUs take (run.amp=auto chooses it where bf16 is native), so these
tests make auto choose it on any CPU and inject the fault -- a NaN gradient -- with a hook."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from fixtures_gloo import join, spawn

from simsiam.artifacts import checkpoint as ckpt_io
from simsiam.parallel import distributed as dist
from simsiam.train import finite_guard, speed
from simsiam.train import pretrain as pretrain_module
from simsiam.train.finite_guard import (
    APPLIED,
    SKIPPED,
    STOP,
    SWITCH_TO_FP32,
    NonFiniteSteps,
    gradients_finite,
)
from simsiam.train.pretrain import TrainingDiverged, pretrain


@pytest.fixture
def auto_means_bf16(monkeypatch):
    """run.amp=auto chooses bf16, as on a CPU with AVX512-BF16 or AMX (emulated by oneDNN elsewhere)."""
    monkeypatch.delenv("SIMSIAM_CPU_AUTO_AMP", raising=False)
    monkeypatch.setattr(speed, "cpu_bf16_is_native", lambda: True)


def inject_nan_gradients(monkeypatch, at_calls) -> dict:
    """Every method pretrain builds gets a hook that makes one backbone weight's gradient NaN at the
    backward passes numbered ``at_calls`` (from 0, counted over the process); returns the counter."""
    calls = {"n": 0}
    build = pretrain_module.build_method

    def build_with_fault(*args, **kwargs):
        method = build(*args, **kwargs)

        def fault(grad):
            n = calls["n"]
            calls["n"] += 1
            return torch.full_like(grad, math.nan) if at_calls(n) else grad
        next(method.backbone.parameters()).register_hook(fault)
        return method
    monkeypatch.setattr(pretrain_module, "build_method", build_with_fault)
    return calls


def records(run_dir, kind):
    return [r for r in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines()) if r.get("kind") == kind]


def all_finite(state: dict) -> bool:
    return all(torch.isfinite(t).all() for t in state.values() if t.is_floating_point())


def test_verdicts_follow_the_precision_asked_for():
    auto = NonFiniteSteps("auto", bf16=True)
    assert [auto.verdict(ok, i) for i, ok in enumerate([True, False, False, False, False])] == \
        [APPLIED, SWITCH_TO_FP32, SKIPPED, SKIPPED, STOP]  # in fp32 after the switch: then the limit applies
    assert auto.skipped == 4 and auto.first_skipped_step == 2
    explicit = NonFiniteSteps("bf16", bf16=True)
    assert [explicit.verdict(ok, 0) for ok in [False, False, True, False, False, False]] == \
        [SKIPPED, SKIPPED, APPLIED, SKIPPED, SKIPPED, STOP]  # a finite step resets the count
    assert NonFiniteSteps("auto", bf16=False).verdict(False, 0) == SKIPPED  # auto that chose fp32: nothing to leave


def test_check_finds_nan_and_inf_in_any_gradient():
    params = [torch.nn.Parameter(torch.ones(3)), torch.nn.Parameter(torch.ones(2, 2)), torch.nn.Parameter(torch.ones(1))]
    params[2].grad = None  # a parameter without a gradient is not looked at
    for bad in (math.nan, math.inf, -math.inf):
        params[0].grad, params[1].grad = torch.zeros(3), torch.zeros(2, 2)
        assert gradients_finite(params)
        params[1].grad[1, 0] = bad
        assert not gradients_finite(params)


def test_auto_leaves_bf16_at_the_first_bad_step_and_a_resume_stays_in_fp32(digits_cfg, auto_means_bf16, monkeypatch):
    digits_cfg.data.train_limit, digits_cfg.data.eval_split = 512, ""  # 4 steps an epoch, no monitor
    inject_nan_gradients(monkeypatch, lambda n: n == 2)
    pretrain(digits_cfg)
    run_dir = Path(digits_cfg.run.out_dir)
    switch, = records(run_dir, "precision")
    assert switch["step"] == 3 and switch["amp"] == "off"
    epochs = records(run_dir, "epoch")
    assert [e.get("skipped_steps", 0) for e in epochs] == [1, 0] and all(math.isfinite(e["loss"]) for e in epochs)
    saved = ckpt_io.load(run_dir / "checkpoint.pt")
    assert saved["config"]["run"]["amp"] == "off" and saved["amp_requested"] == "auto"
    assert json.loads((run_dir / "config.json").read_text())["run"]["amp"] == "off"
    assert all_finite(saved["model"])

    # Resumed for one more epoch, a bad step is skipped as in fp32: no second switch.
    inject_nan_gradients(monkeypatch, lambda n: n == 2)
    digits_cfg.optim.epochs = 3
    pretrain(digits_cfg, resume=True)
    assert len(records(run_dir, "precision")) == 1
    assert records(run_dir, "epoch")[-1]["skipped_steps"] == 1
    assert ckpt_io.load(run_dir / "checkpoint.pt")["config"]["run"]["amp"] == "off"


def test_explicit_bf16_stops_after_steps_in_a_row_naming_bf16(digits_cfg, monkeypatch):
    digits_cfg.run.amp = "bf16"
    inject_nan_gradients(monkeypatch, lambda n: n >= 2)
    with pytest.raises(TrainingDiverged) as err:
        pretrain(digits_cfg)
    message = str(err.value)
    assert f"{finite_guard.MAX_CONSECUTIVE_SKIPS} steps in a row (steps 3-5)" in message
    assert "run.amp=bf16" in message and "run.amp=off" in message
    assert not (Path(digits_cfg.run.out_dir) / "checkpoint.pt").exists()


def test_nan_loss_under_bf16_says_so(digits_cfg, monkeypatch):
    """A NaN loss with finite gradients (a NaN constant added) is a divergence; under bf16 the
    message names bf16 and fp32 as the way to resume."""
    digits_cfg.run.amp, digits_cfg.run.log_every = "bf16", 1
    build = pretrain_module.build_method

    def build_with_nan_loss(*args, **kwargs):
        method = build(*args, **kwargs)
        step = method.training_step

        def nan_loss(views):
            out = step(views)
            return {**out, "loss": out["loss"] + math.nan}  # d(loss)/dw unchanged: finite
        method.training_step = nan_loss
        return method
    monkeypatch.setattr(pretrain_module, "build_method", build_with_nan_loss)
    with pytest.raises(TrainingDiverged, match=r"loss became nan at step 1 .*in bf16.*run\.amp=off"):
        pretrain(digits_cfg)


def _one_rank_bad(rank: int, port: int, bad_rank: int) -> None:
    join(rank, port)
    try:
        p = torch.nn.Parameter(torch.zeros(4))
        p.grad = torch.zeros(4)
        if rank == bad_rank:
            p.grad[2] = math.nan
        expected = bad_rank < 0
        assert gradients_finite([p]) is expected, f"rank {rank}: expected {expected}"
    finally:
        dist.cleanup()


@pytest.mark.parametrize("bad_rank", [1, -1])
def test_ranks_agree_on_a_bad_step_seen_by_one(bad_rank):
    spawn(_one_rank_bad, bad_rank)
