"""run.threads (train/threads.py): the usable cores, the candidates, and a choice made from step times
that follows a change of load."""
from __future__ import annotations

import pytest
import torch

from simsiam.config import ConfigError
from simsiam.train import threads
from simsiam.train.pretrain import pretrain
from simsiam.train.threads import PROBE_ROUNDS, PROBE_STEPS, ThreadTuner, candidates, cgroup_cpu_limit, plan_threads


@pytest.fixture
def keep_thread_count():
    """Tests here change torch's thread count; the next test gets the one it had."""
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_cgroup_quota_in_cores(tmp_path):
    (tmp_path / "cpu.max").write_text("150000 100000\n")
    assert cgroup_cpu_limit(tmp_path) == 1.5
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert cgroup_cpu_limit(tmp_path) is None
    (tmp_path / "cpu.max").unlink()
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("200000\n")
    (tmp_path / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert cgroup_cpu_limit(tmp_path) == 2.0
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("-1\n")
    assert cgroup_cpu_limit(tmp_path) is None
    assert cgroup_cpu_limit(tmp_path / "nothing-here") is None


def test_quota_bounds_the_usable_cores(monkeypatch):
    monkeypatch.setattr(threads.os, "sched_getaffinity", lambda pid: set(range(16)), raising=False)
    monkeypatch.setattr(threads, "cgroup_cpu_limit", lambda: 2.5)
    assert threads.usable_cores() == 3
    monkeypatch.setattr(threads, "cgroup_cpu_limit", lambda: None)
    assert threads.usable_cores() == 16


def test_candidates():
    assert candidates(1) == [1] and candidates(2) == [1, 2] and candidates(6) == [1, 2, 4, 6]
    assert candidates(8) == [1, 2, 4, 8]


def test_plan_keeps_a_choice_already_made(monkeypatch, keep_thread_count):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert plan_threads(0, "cpu")[0] is None
    assert plan_threads(2, "cpu") == (None, "threads 2 (run.threads=2)") and torch.get_num_threads() == 2
    monkeypatch.delenv("OMP_NUM_THREADS")
    monkeypatch.setattr(threads, "usable_cores", lambda: 4)
    counts, words = plan_threads(0, "cpu")
    assert counts == [1, 2, 4] and "probing" in words
    assert plan_threads(0, "cpu", deterministic=True)[0] is None and torch.get_num_threads() == 4
    assert plan_threads(0, "cuda")[0] is None


class FakeMachine:
    """A step time per thread count, which the test changes to play another process arriving."""

    def __init__(self, seconds: dict[int, float]):
        self.seconds, self.threads, self.said = seconds, None, []

    def set_threads(self, n: int) -> None:
        self.threads = n

    def run(self, tuner: ThreadTuner, steps: int) -> None:
        for _ in range(steps):
            tuner.after_step(self.seconds[self.threads])


def test_tuner_keeps_the_fastest_count_and_probes_again_when_the_load_changes():
    machine = FakeMachine({1: 0.10, 2: 0.06})  # a quiet machine: 2 threads win
    tuner = ThreadTuner([1, 2], machine.said.append, machine.set_threads)
    probe_steps = PROBE_ROUNDS * 2 * PROBE_STEPS
    machine.run(tuner, probe_steps)
    assert not tuner.probing and tuner.chosen == 2 and machine.threads == 2
    assert machine.said == ["threads 2 (run.threads=auto; median step with 1: 100 ms, 2: 60 ms)"]

    machine.seconds = {1: 0.11, 2: 0.07}  # a small drift: no new probe
    machine.run(tuner, 100)
    assert tuner.probes == 1

    machine.seconds = {1: 0.12, 2: 0.60}  # another process took a core: 2 threads wait at barriers
    for _ in range(threads.WATCH_STEPS):  # the window's median moves past JUMP within it
        machine.run(tuner, 1)
        if tuner.probes == 2:
            break
    assert tuner.probes == 2
    steps_at = []
    while tuner.probing:  # the slow count is dropped after its first step: one costly step, not four
        steps_at.append(machine.threads)
        machine.run(tuner, 1)
    assert steps_at.count(2) == 1 and tuner.chosen == 1 and machine.threads == 1
    assert len(machine.said) == 2 and machine.said[1].startswith("threads 1 ")
    assert "; the step time moved from 60 to " in machine.said[1]


def test_a_run_says_its_threads_and_chooses_them(digits_cfg, monkeypatch, keep_thread_count, capsys):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(threads, "usable_cores", lambda: 2)
    digits_cfg.run.quiet = False
    digits_cfg.data.eval_split = ""
    pretrain(digits_cfg)  # 2 epochs of 11 steps: the probe's 16 fit
    out = capsys.readouterr()
    text = out.out + out.err
    assert "threads auto: probing 1, 2 on the first steps (2 usable cores)" in text
    assert "(run.threads=auto; median step with 1: " in text


def test_negative_threads_refused(digits_cfg):
    digits_cfg.run.threads = -1
    with pytest.raises(ConfigError, match="run.threads must not be negative"):
        pretrain(digits_cfg)


def test_probes_that_keep_the_count_come_less_often():
    machine = FakeMachine({1: 0.10, 2: 0.06})
    tuner = ThreadTuner([1, 2], machine.said.append, machine.set_threads)
    starts, step = [], 0
    for _ in range(4000):  # the load jumps every 10 steps, and the best count stays 2
        machine.seconds = {1: 0.10, 2: 0.06} if (step // 10) % 2 else {1: 0.20, 2: 0.12}
        probes = tuner.probes
        machine.run(tuner, 1)
        if tuner.probes > probes:
            starts.append(step)
        step += 1
    gaps = [b - a for a, b in zip(starts, starts[1:])]
    assert gaps == sorted(gaps) and gaps[-1] >= threads.MAX_STEPS_BETWEEN_PROBES
    assert len(machine.said) == 1  # the first choice alone: no later probe changed it
