"""run.threads=auto against fixed thread counts, on a quiet machine and beside a competing process.

    PYTHONPATH=src python scripts/threads_figures.py [--preset fmnist] [--images 12800] [--rounds 2]
        [--threads 0 1 2] [--conditions quiet busy] [--out docs/bench/threads.json]

Each measurement is a real ``simsiam pretrain`` process (one epoch of ``--images`` training images,
no monitor, its own interpreter, ``OMP_NUM_THREADS`` unset so that ``run.threads`` decides) and its
figure is the training images/s of its epoch record, probe steps included. Under each condition the
thread settings take turns, ``--rounds`` times, so that a change of load hits them alike; the
competing process is a one-core busy loop at normal priority, started by this script and stopped
after its condition. Prints a markdown table of the medians, each also as a share of the best
setting of its condition.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path


def one_run(preset: str, images: int, threads: int, out_dir: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    cmd = [sys.executable, "-m", "simsiam", "pretrain", "--preset", preset, "--out-dir", str(out_dir), "--quiet",
           "--epochs", "1", f"data.train_limit={images}", "data.eval_split=", f"run.threads={threads}",
           "run.epoch_checkpoint_minutes=1000"]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed: {done.stderr.strip().splitlines()[-1:]}")
    records = [json.loads(line) for line in (out_dir / "metrics.jsonl").read_text().splitlines()]
    epoch = [r for r in records if r.get("kind") == "epoch"][-1]
    chosen = [line for line in (done.stdout + done.stderr).splitlines() if "run.threads=auto;" in line]
    return {"images_per_s": epoch["images_per_s"], "auto_chose": chosen[-1] if chosen else ""}


def measure(preset: str, images: int, settings: list[int], rounds: int, competitor: bool) -> dict:
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if competitor else None
    runs: dict[int, list[dict]] = {t: [] for t in settings}
    try:
        with tempfile.TemporaryDirectory() as work:
            for r in range(rounds):
                for t in settings:
                    runs[t].append(one_run(preset, images, t, Path(work) / f"r{r}-t{t}"))
    finally:
        if busy is not None:
            busy.kill()
            busy.wait()
    return {t: {"images_per_s": [x["images_per_s"] for x in rs],
                "median": statistics.median(x["images_per_s"] for x in rs),
                "auto_chose": [x["auto_chose"] for x in rs if x["auto_chose"]]} for t, rs in runs.items()}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="fmnist")
    p.add_argument("--images", type=int, default=12800)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--threads", type=int, nargs="+", default=[0, 1, 2], help="run.threads settings (0: auto)")
    p.add_argument("--conditions", nargs="+", default=["quiet", "busy"], choices=("quiet", "busy"),
                   help="quiet: nothing started beside the runs; busy: a one-core busy loop beside them")
    p.add_argument("--out", default="")
    args = p.parse_args(argv)
    names = {"quiet": ("quiet", False), "busy": ("one busy process", True)}
    results = {names[c][0]: measure(args.preset, args.images, args.threads, args.rounds, names[c][1])
               for c in args.conditions}
    label = {0: "auto"}
    print(f"| condition | {' | '.join(f'run.threads={label.get(t, t)}' for t in args.threads)} |")
    print("|---|" + "---:|" * len(args.threads))
    for name, by in results.items():
        best = max(v["median"] for v in by.values())
        cells = [f"{v['median']:.0f} ({100 * v['median'] / best:.0f}%)" for v in by.values()]
        print(f"| {name} | {' | '.join(cells)} |")
    for name, by in results.items():
        if 0 in by:
            print(f"{name}, auto chose: " + "; ".join(by[0]["auto_chose"]))
    if args.out:
        Path(args.out).write_text(json.dumps({"args": vars(args), "results": results}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
