"""``simsiam bench`` runs end to end and reports every figure it promises (no timing is asserted:
the figures depend on the machine and its load)."""
import json
import math

import pytest
import torch

from simsiam import get_preset
from simsiam.augment import native
from simsiam.cli import main
from simsiam.perf.bench import flops_per_image, synthetic_dataset
from simsiam.resolve import resolve
from simsiam.train.allocator import allocator_state


def _positive(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x) and x > 0


def test_bench_on_digits_prints_a_table_and_writes_json(tmp_path, capsys):
    path = tmp_path / "bench" / "digits.json"
    code = main(["bench", "--preset", "digits", "--steps", "2", "--warmup", "1", "--rounds", "3", "--threads", "1",
                 "--matmul-size", "256", "--json", str(path), "data.num_workers=1", "optim.epochs=0",
                 "optim.budget_images=3000"])
    assert code == 0
    out = capsys.readouterr().out
    for row in ("data pipeline alone", "training step alone", "both together", "GFLOP per image", "peak probes",
                "of the fp32 matmul", "peak memory", "load average", "side by side: "):
        assert row in out, row

    r = json.loads(path.read_text())
    assert r["preset"] == "digits" and r["config"]["preset"] == "digits"
    assert r["config"]["optim"]["epochs"] == 2  # a budget in images: the steps follow a real schedule
    assert "other_processes_cores" in r
    assert r["device"] == "cpu" and r["threads"] == 1 and r["batch_size"] == 128
    assert r["allocator"] == allocator_state() and r["allocator"]  # main() applied the allocator settings
    assert r["steps"] == 2 and r["warmup"] == 1 and r["image_shape"] == [1, 8, 8]
    for phase in ("pipeline", "step", "end_to_end"):
        row = r["images_per_s"][phase]
        assert all(_positive(row[k]) for k in ("ours", "reference", "ratio")), phase
        assert row["ratio"] == pytest.approx(row["ours"] / row["reference"])
    side = r["end_to_end_vs_step"]
    assert len(side["rounds"]) == 3 and all(_positive(x) for x in side["rounds"]) and side["steps_per_round"] == 2
    assert side["median"] == pytest.approx(sorted(side["rounds"])[1], abs=1e-4)
    assert r["ours"]["pipeline"] == "batched" and r["reference"]["pipeline"] == "per_image"
    # The C augmentation kernel against the torch ops, alternating rounds (as many as --rounds);
    # without a C compiler, the torch ops alone.
    kernels = r["pipeline_by_augment_kernel"]
    if native.unavailable_reason() is None:
        assert r["ours"]["augment_kernel"] == "native" and kernels["rounds"] == 3
        assert _positive(kernels["native"]) and _positive(kernels["torch"]) and _positive(kernels["ratio"])
        assert "native kernel" in out and "(augmentation: native C kernel)" in out
    else:
        assert r["ours"]["augment_kernel"] == "torch" and kernels is None and "(augmentation: torch ops)" in out
    assert r["reference"]["workers"] == 1 and r["reference"]["amp"] == "fp32"
    assert r["ours"]["channels_last"] is True and r["ours"]["compile"] == "off"
    # run.compile=auto's choice, as pretrain would settle it (digits is measured nowhere: off), said once
    assert r["ours"]["compile_choice"].startswith("compile: off (not measured for this model")
    assert out.count(r["ours"]["compile_choice"]) == 1 and r["config"]["run"]["compile"] == "false"
    assert _positive(r["flops_per_image"]) and _positive(r["matmul_peak_flops"])
    assert r["matmul_size"] == 256 and set(r["peak_probes"]) == {"matmul_fp32", "conv_fp32"}
    assert r["matmul_peak_flops"] == r["peak_probes"]["matmul_fp32"]
    for side in ("ours", "reference"):
        assert _positive(r["achieved_flops"][side])
        peak = r["peak_flops"][side]
        assert peak == max(r["peak_probes"].values())  # fp32 on both sides here: the best fp32 probe
        assert r["fraction_of_peak"][side] == pytest.approx(r["achieved_flops"][side] / peak)
        assert r["fraction_of_matmul_peak"][side] == pytest.approx(r["achieved_flops"][side] / r["matmul_peak_flops"])
    assert _positive(r["memory"]["peak_rss_mb"]) and "peak_rss_workers_mb" in r["memory"]
    assert len(r["load_avg_before"]) == 3 and len(r["load_avg_after"]) == 3
    assert r["command"] == ("simsiam bench --preset digits --steps 2 --warmup 1 --rounds 3 --threads 1 "
                            "--matmul-size 256 "
                            "data.num_workers=1 optim.epochs=0 optim.budget_images=3000")


def test_synthetic_data_has_the_preset_dataset_shape():
    data = synthetic_dataset(resolve(get_preset("cifar10")), 12)
    assert data.images.shape == (12, 3, 32, 32) and data.images.dtype == torch.uint8
    assert data.channels == 3 and data.image_size == 32 and len(data.labels) == 12


def test_flop_count_is_forward_plus_twice_forward_for_backward():
    """A sanity check of the count against the rule of thumb: backward costs about twice the forward
    (a little less: the first conv needs no gradient for its input)."""
    from torch.utils.flop_counter import FlopCounterMode

    from simsiam.methods import build_method

    cfg = resolve(get_preset("digits"))
    total = flops_per_image(cfg, 1, 8, torch.device("cpu"))
    method = build_method(cfg, 1).train()
    views = tuple(torch.randn(16, 1, 8, 8) for _ in range(2))
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        method.training_step(views)
    forward = counter.get_total_flops() / 16
    assert 2.5 * forward < total <= 3.0 * forward


class _SettlingTrainer:
    """A step that is slow for its first ``slow`` calls (kernel choice), then steady."""

    def __init__(self, slow: int):
        self.calls, self.slow = 0, slow

    def step(self, views):
        self.calls += 1
        import time

        time.sleep(0.06 if self.calls <= self.slow else 0.015)


def test_warm_up_goes_on_until_the_step_time_is_stable():
    from simsiam.perf.bench import MAX_WARMUP, BenchOptions, warm_up

    # Two slow first calls: the window holding them is not stable, so warm-up outlasts its minimum of
    # two windows (6 rounds) by at least one round.
    rounds = warm_up([_SettlingTrainer(slow=2)], None, BenchOptions(warmup=1), torch.device("cpu"))
    assert 7 <= rounds <= MAX_WARMUP
    assert 6 <= warm_up([_SettlingTrainer(slow=0)], None, BenchOptions(warmup=1), torch.device("cpu")) <= MAX_WARMUP
    assert warm_up([_SettlingTrainer(slow=0)], None, BenchOptions(warmup=10), torch.device("cpu")) >= 10


def test_the_bench_says_when_the_load_moved():
    from simsiam.perf.bench import load_moved

    assert load_moved((1.0, 1.0, 1.0), (2.1, 1.3, 1.1)) and not load_moved((1.0, 1.0, 1.0), (1.2, 1.0, 1.0))


def test_the_bench_counts_other_processes_cpu_not_its_own():
    """A child of the bench is the bench's; a process outside its tree (an orphan, reparented away
    from us) is another process's load."""
    import subprocess
    import sys
    import time

    from simsiam.perf import others

    if others.sample().ours is None:
        pytest.skip("CPU times are read from /proc (Linux)")
    spin = "import time\nt = time.time()\nwhile time.time() - t < 1.5: pass"
    # The child spins until it has used 0.7 s of CPU, however busy the machine, then waits to be sampled.
    spin_then_wait = "import sys, time\nwhile time.process_time() < 0.7: pass\nprint(flush=True)\nsys.stdin.read()"
    before = others.sample()
    child = subprocess.Popen([sys.executable, "-c", spin_then_wait], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    child.stdout.readline()
    during = others.sample()  # the child is alive: its CPU is ours
    child.communicate()
    assert (during.ours - before.ours) / others._TICKS > 0.6
    before = others.sample()
    subprocess.run(["sh", "-c", f'"{sys.executable}" -c "{spin}" &'], check=True)  # sh exits: the spinner is orphaned
    time.sleep(1.2)
    busy = others.busy_cores(before, others.sample())
    assert busy is not None and busy > 0.5
