"""The GPU figures in one prepared run: bench, a 4-minute Fashion-MNIST pretraining, an exact-resume check.

GPU time comes in short windows, so this runs every measurement of docs/PERFORMANCE.md's "GPU
figures" in one command, each part in its own process under its own time limit: a part that
fails or overruns is reported as such and the others still run. Everything lands in one folder
of at most eight files (what the device tool returns), summarised in ``summary.md``::

    bash scripts/gpu_figures.sh --out OUT                 # on the GPU machine (about 8 minutes)
    bash scripts/gpu_figures.sh --device cpu --dry-run --out OUT --data-dir DIR   # tiny, seconds
    python scripts/gpu_figures.py --to-docs OUT           # the summary as docs/PERFORMANCE.md's table

Fashion-MNIST's four .gz files are read from ``.device_data/fashion-mnist`` (git-ignored; carried
to the device machine) unless ``--data-dir`` says otherwise.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import gpu_jpeg_decode  # the jpeg_decode part (scripts/ is on the path: this script's folder)

REPO = Path(__file__).resolve().parent.parent
DEFAULT_DATA = REPO / ".device_data" / "fashion-mnist"
FMNIST_FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
                "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")

# Seconds each part may take on the GPU; together under 8 minutes with the start-up of each process.
GPU_LIMITS = {"bench_eager": 60, "bench_compiled": 120, "pretrain": 330, "resume": 75, "jpeg_decode": 90}
# The dry run's parts are tiny; these limits only catch a hang. They are generous: on a CPU shared
# with another busy process, two OpenMP threads can run tiny steps ten times slower than alone.
DRY_LIMITS = {"bench_eager": 300, "bench_compiled": 180, "pretrain": 300, "resume": 240, "jpeg_decode": 120}


# ------------------------------------------------------------------------------------ the parts

def bench_args(opts: argparse.Namespace, compiled: bool, out: Path) -> list[str]:
    """``simsiam bench`` on synthetic CIFAR-shaped data: batch 512, two 32x32 views, bf16, channels_last.
    (bf16 on a GPU only: a CPU without native bf16 emulates it, far too slowly for a dry run.)"""
    # A dry run's peak probes are small too: the default 2048-sided matmul takes seconds on a CPU.
    size = ["--steps", "2", "--warmup", "1", "--rounds", "1", "--batch-size", "16", "--matmul-size", "256",
            "model.width=8"] if opts.dry_run \
        else ["--steps", "30", "--warmup", "10", "--rounds", "3", "--batch-size", "512"]
    return [sys.executable, "-m", "simsiam", "bench", "--preset", "cifar10", "--synthetic", "--device", opts.device,
            *size, "run.channels_last=true", f"run.amp={'bf16' if opts.device.startswith('cuda') else 'off'}", f"run.compile={str(compiled).lower()}",
            "--json", str(out)]


def pretrain_recipe(opts: argparse.Namespace) -> list[str]:
    """The fmnist preset with the full-width CIFAR ResNet-18 at batch 512. The base lr stays the
    preset's 0.2 (the linear rule gives lr 0.4 at batch 512), and the kNN monitor runs only at the end."""
    if opts.dry_run:
        return ["model.width=8", "optim.batch_size=32", "data.train_limit=256", "data.eval_limit=64",
                "monitor.knn_k=20"]
    return ["model.width=64", "optim.batch_size=512", "optim.base_lr=0.2", "data.num_workers=0"]


def run_pretrain(opts: argparse.Namespace, out: Path) -> dict:
    """A short timed probe (1 epoch on a subset, warm-up included, so it underestimates the speed) sets
    the epochs that fit in the budget; then one clean run of that many epochs, then its baselines."""
    work = opts.work
    common = ["--preset", "fmnist", "--data-dir", str(opts.data_dir), "--quiet", f"run.device={opts.device}",
              *pretrain_recipe(opts)]
    probe_dir = work / "probe"
    probe_limit = 256 if opts.dry_run else 10240
    _check([sys.executable, "-m", "simsiam", "pretrain", *common, "--out-dir", str(probe_dir),
            "optim.epochs=1", f"data.train_limit={probe_limit}", "data.eval_split="])
    probe_ips = _epoch_records(probe_dir)[-1]["images_per_s"]
    train_images = 256 if opts.dry_run else 60000
    epochs = max(1, math.floor(0.9 * opts.budget_s * probe_ips / train_images))
    run_dir = work / "fmnist"
    started = time.perf_counter()
    _check([sys.executable, "-m", "simsiam", "pretrain", *common, "--out-dir", str(run_dir),
            f"optim.epochs={epochs}", f"monitor.every={epochs}"])
    train_seconds = time.perf_counter() - started
    knn_json = work / "knn.json"
    _check([sys.executable, "-m", "simsiam", "knn", str(run_dir), "--baselines", "--device", opts.device,
            "--data-dir", str(opts.data_dir), "--json", str(knn_json)])
    knn = json.loads(knn_json.read_text())
    records = _epoch_records(run_dir)
    curves = run_dir / "curves.png"
    if curves.is_file():
        (out / "curves.png").write_bytes(curves.read_bytes())
    return {
        "recipe": common[common.index("--quiet") + 1:],
        "probe_images_per_s": probe_ips, "budget_s": opts.budget_s, "epochs": epochs,
        "wall_s": round(train_seconds, 1),
        "images_per_s_last_epoch": records[-1]["images_per_s"],
        "knn_top1": knn["accuracy"], "baselines": knn.get("baselines", {}),
        "knn_by_epoch": {r["epochs_done"]: r["knn_acc"] for r in records if "knn_acc" in r},
        "z_std_sqrt_d_last": records[-1]["z_std_sqrt_d"],
    }


def run_resume(opts: argparse.Namespace) -> dict:
    """2 epochs straight against 1 epoch, an interruption, and a resume for the second: the max abs
    weight difference, eager, then with run.deterministic=true (cuDNN's deterministic kernels)."""
    import torch

    from simsiam import apply_overrides, get_preset, pretrain
    from simsiam.artifacts import checkpoint as ckpt_io
    from simsiam.train import pretrain as train_module

    # cuBLAS needs this to run deterministically on CUDA; set before its first call in this process.
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    limit = 128 if opts.dry_run else 5120
    result = {}
    for deterministic in (False, True):
        def config(name: str):
            return apply_overrides(get_preset("fmnist"), [
                *pretrain_recipe(opts), f"data.data_dir={opts.data_dir}", f"data.train_limit={limit}",
                "data.eval_split=", "optim.epochs=2", f"run.device={opts.device}", "run.quiet=true",
                "run.epoch_checkpoint_minutes=0",  # epoch 1's checkpoint is the one interrupted
                f"run.deterministic={str(deterministic).lower()}", f"run.out_dir={opts.work / name}"])

        tag = "deterministic" if deterministic else "default"
        pretrain(config(f"straight_{tag}"))
        interrupted = config(f"resumed_{tag}")
        _interrupt_after_first_checkpoint(train_module, interrupted)
        pretrain(interrupted, resume=True)
        a = ckpt_io.load(Path(config(f"straight_{tag}").run.out_dir) / "checkpoint.pt")["model"]
        b = ckpt_io.load(Path(interrupted.run.out_dir) / "checkpoint.pt")["model"]
        diff = max((a[k].double() - b[k].double()).abs().max().item() for k in a if a[k].is_floating_point())
        result[tag] = {"max_abs_weight_difference": diff, "bitwise_equal": all(torch.equal(a[k], b[k]) for k in a)}
    return result


class _Interrupted(Exception):
    pass


def _interrupt_after_first_checkpoint(train_module, cfg) -> None:
    """Run ``cfg`` until its first checkpoint is on disk, then stop it as a crash would."""
    real_save = train_module.ckpt_io.save_atomic

    def save_then_stop(obj, path):
        real_save(obj, path)
        raise _Interrupted

    train_module.ckpt_io.save_atomic = save_then_stop
    try:
        train_module.pretrain(cfg)
    except _Interrupted:
        pass
    finally:
        train_module.ckpt_io.save_atomic = real_save


# ----------------------------------------------------------------------------- orchestration

def run_part(name: str, opts: argparse.Namespace, limits: dict[str, int], log) -> dict:
    """One part in its own process group under its time limit: ``{"status", "seconds"}``; a part that
    overruns is killed with everything it started (DataLoader workers, compile workers)."""
    if name.startswith("bench"):
        cmd = bench_args(opts, name == "bench_compiled", opts.out / f"{name}.json")
    else:
        cmd = [sys.executable, __file__, "--part", name, *_forwarded(opts)]
    started = time.perf_counter()
    log.write(f"\n$ {' '.join(cmd)}\n")
    log.flush()
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=REPO, start_new_session=True)
    try:
        rc = proc.wait(timeout=limits[name])
        status = "ok" if rc == 0 else f"failed (exit {rc}; see log.txt)"
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        status = f"timed out after {limits[name]} s"
    seconds = round(time.perf_counter() - started, 1)
    print(f"{name}: {status} ({seconds} s)", flush=True)
    return {"status": status, "seconds": seconds, "limit_s": limits[name]}


def _forwarded(opts: argparse.Namespace) -> list[str]:
    args = ["--device", opts.device, "--out", str(opts.out), "--data-dir", str(opts.data_dir),
            "--budget-s", str(opts.budget_s), "--work", str(opts.work)]
    return args + (["--dry-run"] if opts.dry_run else [])


def _check(cmd: list[str]) -> None:
    print("$", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, cwd=REPO)


def _epoch_records(run_dir: Path) -> list[dict]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r.get("kind") == "epoch"]


def machine() -> dict:
    import torch

    info = {"torch": torch.__version__, "python": platform.python_version(), "commit": _git("rev-parse", "HEAD"),
            "dirty": bool(_git("status", "--porcelain", "--untracked-files=no")), "device_name": platform.processor()}
    if torch.cuda.is_available():
        info["device_name"] = torch.cuda.get_device_name(0)
        info["cuda"] = torch.version.cuda
        try:
            smi = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total",
                                  "--format=csv,noheader"], capture_output=True, text=True, timeout=20)
            info["nvidia_smi"] = smi.stdout.strip()
        except (OSError, subprocess.TimeoutExpired) as err:
            info["nvidia_smi"] = f"unavailable: {err}"
    return info


def _git(*args: str) -> str:
    try:
        return subprocess.run(["git", *args], capture_output=True, text=True, cwd=REPO, timeout=10).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return ""


def missing_data(data_dir: Path) -> list[str]:
    return [name for name in FMNIST_FILES if not (data_dir / name).is_file()]


# ------------------------------------------------------------------------------------- summary

def summary_markdown(out: Path) -> str:
    """The run's figures as docs/PERFORMANCE.md's "GPU figures" table (also ``summary.md``)."""
    s = json.loads((out / "summary.json").read_text())
    m, parts = s["machine"], s["parts"]
    lines = [f"GPU figures: {m.get('device_name', '?')} ({m.get('nvidia_smi', 'no nvidia-smi')}), torch {m['torch']}, "
             f"commit `{m['commit'][:7]}`{' (uncommitted changes)' if m['dirty'] else ''}, {s['date']}"
             f"{' -- DRY RUN on ' + s['device'] if s['dry_run'] else ''}.", "",
             "| part | status | figures |", "|---|---|---|"]
    for name in ("bench_eager", "bench_compiled"):
        figures = ""
        path = out / f"{name}.json"
        if path.is_file():
            b = json.loads(path.read_text())
            ips = b["images_per_s"]
            figures = (f"step {ips['step']['ours']:.0f} img/s (reference {ips['step']['reference']:.0f}), pipeline "
                       f"{ips['pipeline']['ours']:.0f}, end to end {ips['end_to_end']['ours']:.0f} (reference "
                       f"{ips['end_to_end']['reference']:.0f}); {b['fraction_of_peak']['ours']:.0%} of the "
                       f"{b['peak_probe_used']['ours']} probe; compile {b['ours']['compile']}; peak memory "
                       f"{json.dumps(b['memory'])}")
        setting = "batch 16, fp32" if s["dry_run"] else "batch 512, bf16"
        lines.append(f"| {name} (cifar10, {setting}, channels_last) | "
                     f"{parts.get(name, {}).get('status', 'not run')} | {figures} |")
    p = s.get("pretrain")
    figures = ""
    if p:
        base = ", ".join(f"{k} {v:.2f}%" for k, v in p["baselines"].items())
        knn = ", ".join(f"{k}: {v:.2f}%" for k, v in p["knn_top1"].items())
        figures = (f"{p['epochs']} epochs in {p['wall_s']} s ({p['images_per_s_last_epoch']:.0f} img/s last epoch); "
                   f"kNN {knn}; baselines: {base}; std x sqrt(d) {p['z_std_sqrt_d_last']:.3f}; "
                   f"recipe `{' '.join(p['recipe'])}`")
    lines.append(f"| pretrain (fmnist, full-width CIFAR ResNet-18) | {parts.get('pretrain', {}).get('status', 'not run')}"
                 f" | {figures} |")
    r = s.get("resume")
    figures = "; ".join(f"{k}: max abs weight difference {v['max_abs_weight_difference']:.3g}"
                        f"{' (bitwise equal)' if v['bitwise_equal'] else ''}" for k, v in r.items()) if r else ""
    lines.append(f"| resume (1 + resume + 1 epochs vs 2) | {parts.get('resume', {}).get('status', 'not run')} | {figures} |")
    lines.append(gpu_jpeg_decode.summary_row(s, parts.get("jpeg_decode", {}).get("status", "not run")))
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda", help="cuda (the point of it) or cpu (a dry run)")
    p.add_argument("--out", type=Path, default=Path("gpu_figures"), help="the one folder everything goes to")
    p.add_argument("--data-dir", type=Path, default=DEFAULT_DATA, help="Fashion-MNIST's four .gz files")
    p.add_argument("--work", type=Path, default=Path("/tmp/simsiam_gpu_figures"),
                   help="run directories (emptied first; outside --out, which returns only its summary files)")
    p.add_argument("--dry-run", action="store_true", help="tiny sizes: every part end to end in seconds")
    p.add_argument("--budget-s", type=float, default=0.0,
                   help="wall seconds of the Fashion-MNIST pretraining (0: 240, or 3 in a dry run)")
    p.add_argument("--limit", action="append", default=[], metavar="PART=SECONDS", help="change a part's time limit")
    p.add_argument("--only", nargs="+", choices=list(GPU_LIMITS), help="run only these parts")
    p.add_argument("--part", choices=["pretrain", "resume", "jpeg_decode"], help=argparse.SUPPRESS)  # one part, in its own process
    p.add_argument("--to-docs", type=Path, metavar="OUT", help="print OUT's summary as the docs table, and stop")
    opts = p.parse_args(argv)
    if opts.to_docs:
        print(summary_markdown(opts.to_docs), end="")
        return 0
    opts.out = opts.out.resolve()
    opts.data_dir = opts.data_dir.resolve()
    opts.work = opts.work.resolve()
    opts.budget_s = opts.budget_s or (3.0 if opts.dry_run else 240.0)
    if opts.part == "pretrain":
        (opts.out / "pretrain.json").write_text(json.dumps(run_pretrain(opts, opts.out), indent=2))
        return 0
    if opts.part == "resume":
        (opts.out / "resume.json").write_text(json.dumps(run_resume(opts), indent=2))
        return 0
    if opts.part == "jpeg_decode":
        (opts.out / "jpeg_decode.json").write_text(json.dumps(gpu_jpeg_decode.measure(opts), indent=2))
        return 0

    missing = missing_data(opts.data_dir)
    if missing:
        print(f"error: Fashion-MNIST is missing from {opts.data_dir}: {', '.join(missing)}. Put the four .gz files "
              f"there (e.g. mkdir -p {DEFAULT_DATA.relative_to(REPO)} && cp /usr/share/datasets/fashion-mnist/*.gz "
              f"{DEFAULT_DATA.relative_to(REPO)}/), or pass --data-dir DIR.", file=sys.stderr)
        return 2
    limits = dict(DRY_LIMITS if opts.dry_run else GPU_LIMITS)
    for item in opts.limit:
        name, _, seconds = item.partition("=")
        if name not in limits or not seconds.replace(".", "", 1).isdigit():
            print(f"error: --limit {item!r}: expected PART=SECONDS with PART one of {', '.join(limits)}", file=sys.stderr)
            return 2
        limits[name] = float(seconds)
    opts.out.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(opts.work, ignore_errors=True)
    started = time.time()
    parts = {}
    with open(opts.out / "log.txt", "w") as log:
        for name in opts.only or list(GPU_LIMITS):
            parts[name] = run_part(name, opts, limits, log)
    summary = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(started)), "device": opts.device,
               "dry_run": opts.dry_run, "total_s": round(time.time() - started, 1), "parts": parts,
               "machine": machine()}
    for name in ("pretrain", "resume", "jpeg_decode"):
        path = opts.out / f"{name}.json"
        if path.is_file():
            summary[name] = json.loads(path.read_text())
            path.unlink()  # folded into summary.json: the folder stays under the device's eight files
    (opts.out / "summary.json").write_text(json.dumps(summary, indent=2))
    (opts.out / "summary.md").write_text(summary_markdown(opts.out))
    print((opts.out / "summary.md").read_text())
    return 0 if all(v["status"] == "ok" for v in parts.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
