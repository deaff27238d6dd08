"""Where a training step's time goes, kernel by kernel: the torch profiler over the step that trains.

    PYTHONPATH=src python scripts/profile_step.py --preset fmnist [--amp auto|bf16|off] [--steps 10]
        [--threads N] [--top 15] [--out table.md]

Runs the preset's :class:`simsiam.train.step.TrainStep` (as ``pretrain`` and ``simsiam bench`` run
it) on synthetic views of the preset's shape, a few untimed steps first, then ``--steps`` steps
under ``torch.profiler`` with FLOP counting. Prints a markdown table of the ops with the most self
time: their share of the profiled time, calls per step, and the FLOP/s they reached where the
profiler counts FLOPs (matrix multiplications and convolutions). The lines above the table name the
CPU, precision, threads and commit, so that the table can go into docs/PERFORMANCE.md as printed.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
from collections import defaultdict

import torch
from torch.profiler import ProfilerActivity, profile
from torch.utils.flop_counter import FlopCounterMode

from simsiam import get_preset
from simsiam.perf.bench import SYNTHETIC_SHAPES, Trainer, _cpu_name
from simsiam.resolve import resolve
from simsiam.train.speed import resolve_amp

SHAPES = {**SYNTHETIC_SHAPES, "tinyimagenet": (3, 64, 64)}
FORWARD_CONV_KERNELS = ("aten::mkldnn_convolution", "aten::_convolution", "aten::_slow_conv2d_forward",
                        "aten::thnn_conv2d", "aten::cudnn_convolution", "aten::convolution")


def _commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def profile_step(preset: str, amp: str, steps: int, warmup: int) -> tuple[list[dict], float, str]:
    """The ops of ``steps`` profiled steps (self time, calls, FLOPs), the wall seconds per step and
    the precision line."""
    cfg = resolve(get_preset(preset))
    cfg.run.amp = amp
    cfg.optim.epochs = cfg.optim.epochs or 10  # a budget preset: any schedule will do for timing
    device = torch.device("cpu")
    cfg.run.amp, precision = resolve_amp(cfg.run.amp, device)
    channels, height, width = SHAPES[cfg.data.dataset]
    size = cfg.data.image_size or height
    trainer = Trainer(cfg, channels, device, print, 100)
    gen = torch.Generator().manual_seed(0)
    views = tuple(torch.randn(cfg.optim.batch_size, channels, size, size, generator=gen) for _ in range(2))
    for _ in range(warmup):
        trainer.step(views)
    with FlopCounterMode(display=False) as counter:  # one step's FLOPs by op (forward and backward)
        trainer.step(views)
    flops = {str(op).split(".")[-1]: n for op, n in counter.get_flop_counts()["Global"].items()}
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            trainer.step(views)
    ops: dict[str, dict] = defaultdict(lambda: {"self_us": 0.0, "calls": 0, "flops": 0})
    for event in prof.key_averages():
        op = ops[event.key]
        op["self_us"] += event.self_cpu_time_total
        op["calls"] += event.count
    # The counter names the dispatcher's op (aten.convolution); the time is spent in the kernel the
    # dispatcher chose under it (aten::mkldnn_convolution on oneDNN), so forward FLOPs go to the
    # convolution kernel with the most self time.
    forward_conv = max((k for k in ops if k in FORWARD_CONV_KERNELS), key=lambda k: ops[k]["self_us"], default=None)
    for name, n in flops.items():
        target = forward_conv if name == "convolution" else f"aten::{name}"
        if target in ops:
            ops[target]["flops"] += n * steps
    total_us = sum(op["self_us"] for op in ops.values())
    rows = [{"op": name, **op, "share": op["self_us"] / total_us} for name, op in ops.items()]
    rows.sort(key=lambda r: -r["self_us"])
    return rows, total_us / 1e6 / steps, f"{precision}, batch {cfg.optim.batch_size}, {channels}x{size}x{size}"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="fmnist")
    p.add_argument("--amp", default="auto", choices=("auto", "bf16", "off"))
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--top", type=int, default=15)
    p.add_argument("--out", default="")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    rows, step_s, precision = profile_step(args.preset, args.amp, args.steps, args.warmup)
    counted = sum(r["self_us"] for r in rows if r["flops"])
    lines = [
        f"`{' '.join(['python scripts/profile_step.py'] + (argv if argv is not None else sys.argv[1:]))}` "
        f"at commit `{_commit()}`: preset `{args.preset}`, {precision}, {torch.get_num_threads()} thread(s), "
        f"{_cpu_name()}, torch {torch.__version__}; {args.steps} profiled steps, {step_s * 1e3:.1f} ms of op self "
        f"time per step; ops with counted FLOPs (matmul, conv) hold {100 * counted / sum(r['self_us'] for r in rows):.0f}% of it.",
        "",
        "| op | share of the step | calls per step | ms per step | GFLOP/s |",
        "|---|---:|---:|---:|---:|",
    ]
    for r in rows[:args.top]:
        gflops = f"{r['flops'] / (r['self_us'] / 1e6) / 1e9:.1f}" if r["flops"] and r["self_us"] else ""
        lines.append(f"| `{r['op']}` | {100 * r['share']:.1f}% | {r['calls'] / args.steps:.0f} | "
                     f"{r['self_us'] / 1e3 / args.steps:.2f} | {gflops} |")
    text = "\n".join(lines)
    print(text)
    if args.out:
        with open(args.out, "w") as fh:
            fh.write(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
