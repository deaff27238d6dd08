"""``simsiam bench``: images/s of the pipeline, the step and both, against the reference; FLOPs and memory."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..config.presets import PRESETS


def add_parser(sub) -> None:
    p = sub.add_parser("bench", help="measure training speed against the reference implementation",
                       description="Images/s of the data pipeline alone, the training step alone (synthetic "
                                   "tensors) and both together, each beside the reference implementation (per-image "
                                   "PIL pipeline in DataLoader workers, eager fp32, NCHW) measured in the same run; "
                                   "the model's FLOPs per image against this machine's measured matmul peak; peak "
                                   "memory. See docs/PERFORMANCE.md.",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--preset", default="fmnist", choices=sorted(PRESETS), help="the recipe to measure")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                   help="config overrides, e.g. run.channels_last=false run.amp=bf16 run.compile=true")
    p.add_argument("--steps", type=int, default=10, help="measured steps of each phase")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps before each phase")
    p.add_argument("--rounds", type=int, default=5,
                   help="rounds alternating our step alone and our end to end, for their ratio (0: skip)")
    p.add_argument("--batch-size", type=int, help="same as optim.batch_size=...")
    p.add_argument("--device", help="auto, cpu, cuda, cuda:1 (same as run.device=...)")
    p.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default, the cores)")
    p.add_argument("--synthetic", action="store_true",
                   help="random uint8 images of the dataset's shape instead of the dataset (e.g. CIFAR not on disk)")
    p.add_argument("--data-dir", help="where the dataset lives (same as data.data_dir=...)")
    p.add_argument("--matmul-size", type=int, default=0,
                   help="side of the fp32 matmul that measures the peak (0: 2048 on CPU, 8192 on a GPU)")
    p.add_argument("--json", metavar="FILE", help="also write every figure, the config and the machine load as JSON")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..config import apply_overrides
    from ..config.presets import get_preset
    from ..perf.bench import BenchOptions, run_bench

    cfg = get_preset(args.preset)
    apply_overrides(cfg, list(args.overrides))
    for key, value in (("optim.batch_size", args.batch_size), ("run.device", args.device),
                       ("data.data_dir", args.data_dir)):
        if value is not None:
            apply_overrides(cfg, [f"{key}={value}"])
    opts = BenchOptions(steps=args.steps, warmup=args.warmup, synthetic=args.synthetic, threads=args.threads,
                        matmul_size=args.matmul_size, rounds=args.rounds)

    def progress(message: str) -> None:
        print(f"bench: {message} ...", file=sys.stderr, flush=True)

    def warn(message: str) -> None:
        print(f"WARNING: {message}", file=sys.stderr, flush=True)

    result = run_bench(cfg, opts, warn=warn, progress=progress)
    result["command"] = _command_line(args)
    print(format_table(result))
    if args.json:
        path = Path(args.json)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {path}")
    return 0


def _command_line(args: argparse.Namespace) -> str:
    """The command that repeats this measurement (rebuilt from the parsed options, every one explicit)."""
    parts = ["simsiam bench", f"--preset {args.preset}", f"--steps {args.steps}", f"--warmup {args.warmup}",
             f"--rounds {args.rounds}"]
    for flag, value in (("--batch-size", args.batch_size), ("--device", args.device), ("--data-dir", args.data_dir)):
        if value is not None:
            parts.append(f"{flag} {value}")
    if args.threads:
        parts.append(f"--threads {args.threads}")
    if args.matmul_size:
        parts.append(f"--matmul-size {args.matmul_size}")
    if args.synthetic:
        parts.append("--synthetic")
    return " ".join(parts + list(args.overrides))


def format_table(r: dict) -> str:
    """The terminal summary of a :func:`simsiam.bench.run_bench` result."""
    ours, ref = r["ours"], r["reference"]
    workers = f", {ours['workers']} workers" if ours["pipeline"] == "per_image" else ""
    if ours.get("augment_kernel"):
        workers += " (augmentation: " + ("native C kernel" if ours["augment_kernel"] == "native" else "torch ops") + ")"
    lines = [
        f"simsiam bench: preset {r['preset']}, batch {r['batch_size']}, images {'x'.join(map(str, r['image_shape']))}"
        f"{' (synthetic)' if r['dataset']['synthetic'] else ''}, device {r['device']} ({r['device_name']}), "
        f"{r['threads']} threads, {r['steps']} steps after {r['warmup']} warm-up",
        f"this package: {ours['pipeline']} pipeline{workers}, {'channels_last' if ours['channels_last'] else 'NCHW'}, "
        f"{ours['amp']}, compile {ours['compile']}",
        f"reference:    per_image pipeline, {ref['workers']} workers, NCHW, fp32, eager",
        *([f"this package, {ours['compile_choice']}"] if ours.get("compile_choice") else []),
        "",
        f"{'images/s':<22}{'this package':>14}{'reference':>14}{'ratio':>9}",
    ]
    names = {"pipeline": "data pipeline alone", "step": "training step alone", "end_to_end": "both together"}
    for key, label in names.items():
        row = r["images_per_s"][key]
        lines.append(f"{label:<22}{row['ours']:>14.1f}{row['reference']:>14.1f}{row['ratio']:>8.2f}x")
    side = r.get("end_to_end_vs_step") or {}
    if side.get("median") is not None:
        rounds = ", ".join(f"{100 * x:.1f}" for x in side["rounds"])
        lines.append(f"this package, both together / step alone, side by side: {100 * side['median']:.1f}% "
                     f"(median of {len(side['rounds'])} rounds of {side['steps_per_round']} steps each: {rounds})")
    kernels = r.get("pipeline_by_augment_kernel")
    if kernels:
        lines.append(f"this package, data pipeline alone: native kernel {kernels['native']:.1f}, torch ops "
                     f"{kernels['torch']:.1f} images/s, {kernels['ratio']:.2f}x (median of {kernels['rounds']} "
                     "alternating rounds)")
    check = r.get("finite_check")
    if check:
        lines.append(f"this package, finite-gradient check in each step: {check['seconds_median'] * 1e3:.2f} ms, "
                     f"{100 * check['fraction_of_step']:.2f}% of the step")
    by_threads = r.get("step_images_per_s_by_threads")
    if by_threads:
        best = max(by_threads.values())
        lines.append("this package, step alone by thread count (run.threads), images/s: " + ", ".join(
            f"{n} thread{'s' if int(n) > 1 else ''} {ips:.1f} ({100 * ips / best:.0f}%)" for n, ips in by_threads.items())
            + " (median of rounds taking turns)")
    mem = r["memory"]
    probes = ", ".join(f"{name.replace('_', ' ')} {value / 1e9:.1f}" for name, value in r["peak_probes"].items())
    lines += [
        "",
        f"model: {r['flops_per_image'] / 1e9:.3f} GFLOP per image (forward + backward, both views)",
        f"peak probes here (GFLOP/s, best of before/after): {probes}",
    ]
    for side, label in (("ours", "this package"), ("reference", "reference")):
        lines.append(
            f"{label + ':':<14}{r['achieved_flops'][side] / 1e9:.1f} GFLOP/s in the step = "
            f"{100 * r['fraction_of_peak'][side]:.0f}% of the best probe ({r['peak_probe_used'][side].replace('_', ' ')}), "
            f"{100 * r['fraction_of_matmul_peak'][side]:.0f}% of the fp32 matmul")
    lines += [
        f"peak memory: RSS {mem['peak_rss_mb']:.0f} MiB (a DataLoader worker {mem['peak_rss_workers_mb']:.0f} MiB)"
        + (f", CUDA {mem['peak_cuda_mb']:.0f} MiB allocated" if "peak_cuda_mb" in mem else ""),
        f"load average: {' '.join(f'{x:.2f}' for x in r['load_avg_before'])} before, "
        f"{' '.join(f'{x:.2f}' for x in r['load_avg_after'])} after ({r['cpu_cores']} cores)"
        + (f"; other processes used {r['other_processes_cores']:.2f} cores meanwhile"
           if r.get("other_processes_cores") is not None else "")
        + (" -- THE LOAD MOVED during the measurement: other processes shared the cores; re-run on a quiet "
           "machine before trusting the figures" if r.get("load_moved") else ""),
    ]
    return "\n".join(lines)
