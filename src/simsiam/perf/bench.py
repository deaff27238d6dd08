"""``simsiam bench``: where a training step's time goes, against a reference implementation.

For one config it measures images/s of (a) the data pipeline alone, (b) the training step alone on
synthetic tensors and (c) both together, each twice in the same process: once as this package runs
them (the config's pipeline, memory format, precision and compile settings) and once as the
reference does -- per-image PIL/torchvision transforms in DataLoader workers as the official code,
an eager fp32 model in the default memory format. Beside them: the model's FLOPs per image (forward
and backward of both views, counted by ``FlopCounterMode``), the FLOP/s that achieves against this
machine's peak (matmul and convolution probes) measured in the same run, and peak memory.

How the figures are taken, and why (shared machines are noisy):

* The two step variants are timed interleaved, one step each in turn, and the median step time is
  used: a burst of load from another process then hits both alike and a slow outlier does not move
  the figure.
* The pipelines and the end-to-end loops are timed over all their measured steps (total time):
  DataLoader workers deliver batches in bursts, so a per-batch median would overstate them.
* Our end to end as a share of our step alone is also measured side by side: rounds alternating
  the step on synthetic tensors with the step fed by the loader, the median of the rounds' ratios.
* Where our batched pipeline runs the C augmentation kernel (CPU), the pipeline alone is also timed
  with the torch ops, in alternating rounds: what the kernel is worth, measured in one run.
* The peak is probed (``bench_peak``) with the same thread count before and after the step timing,
  keeping the higher: a 2048x2048 fp32 matmul (8192 on a GPU) and a dense 3x3 convolution, in fp32
  and, when the step runs in bf16, in bf16. Each step is measured against the best probe of the
  precision it computes in, and also against the fp32 matmul alone.
* Images are source images: one image is both of its views (as the trainer's images/s).
"""
from __future__ import annotations

import copy
import os
import platform
import resource
import statistics
import time
from dataclasses import dataclass
from typing import Callable, Iterator, Optional

import torch

from ..config import Config
from ..data import InMemoryImages, load_dataset
from ..data.cache import decoded_if_configured
from ..data.loaders import BatchedViewLoader, PerImageViewLoader, build_train_loader
from ..data.subset import subset
from ..methods import build_method
from ..methods.base import Method
from ..optim import build_optimizer
from ..parallel import distributed as dist
from ..resolve import resolve
from ..train.allocator import allocator_state
from ..train.budget import settle_budget
from ..train.compile_pays import settle as settle_compile
from ..train.finite_guard import gradients_finite
from ..train.loop import epoch_batches
from ..train.resources import peak_memory, reset_peak_memory
from ..train.speed import amp_dtype, to_memory_format
from ..train.step import LrSchedule, TrainStep
from ..train.threads import candidates, usable_cores
from . import others
from .peaks import best_peak, dtype_name, measure_peaks

# (channels, height, width) of each in-memory dataset, for --synthetic data of the preset's shape.
SYNTHETIC_SHAPES = {"fmnist": (1, 28, 28), "digits": (1, 8, 8), "cifar10": (3, 32, 32), "cifar100": (3, 32, 32),
                    "stl10": (3, 96, 96)}


@dataclass
class BenchOptions:
    steps: int = 10  # measured steps of each phase
    warmup: int = 2  # untimed steps before them (allocator, oneDNN/cuDNN kernel choice, compilation)
    synthetic: bool = False  # random uint8 images of the dataset's shape instead of the dataset
    threads: int = 0  # torch intra-op threads; 0: torch's default
    matmul_size: int = 0  # side of the peak probe's square matmul; 0: 2048 on CPU, 8192 on a GPU
    rounds: int = 5  # side-by-side rounds of our step alone and our end to end (their ratio)
    warmup_taken: int = 0  # set by the run: warm-up rounds of the step timing until it was stable


# ---------------------------------------------------------------------------------------- data

def synthetic_dataset(cfg: Config, num_images: int, seed: int = 0) -> InMemoryImages:
    """Random uint8 images shaped as ``cfg``'s dataset (image_size overrides the side)."""
    channels, height, width = SYNTHETIC_SHAPES.get(cfg.data.dataset, (3, 224, 224))
    if cfg.data.image_size and cfg.data.dataset not in SYNTHETIC_SHAPES:
        height = width = cfg.data.image_size
    gen = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (num_images, channels, height, width), dtype=torch.uint8, generator=gen)
    labels = torch.randint(0, 10, (num_images,), generator=gen)
    return InMemoryImages(images, labels, f"synthetic-{cfg.data.dataset}", 10, (0.5,) * channels, (0.25,) * channels)


def _load_train_sets(cfg: Config, opts: BenchOptions):
    """(ours, reference): the same images, ours decoded into the cache when the config says so, the
    reference as the files themselves (the per-image pipeline decodes them every epoch)."""
    needed = cfg.optim.batch_size * (opts.warmup + opts.steps)
    if opts.synthetic:
        data = synthetic_dataset(cfg, max(needed, cfg.optim.batch_size), cfg.run.seed)
        return data, data
    files = subset(load_dataset(cfg.data.dataset, "train", cfg.data.data_dir), cfg.data.train_limit)
    return decoded_if_configured(files, cfg.data), files


def _batches(loader, first_epoch: int, method: Optional[Method] = None) -> Iterator[dict]:
    """The loader's usable batches, epoch after epoch, for as long as they are asked for; through
    ``method``'s ``stream`` hook (as training sees them) when a method is given."""
    epoch = first_epoch
    while True:
        for batch in (loader.epoch(epoch) if method is None else epoch_batches(loader, method, epoch)):
            if batch["views"] is not None:
                yield batch
        epoch += 1


# --------------------------------------------------------------------------------------- timing

def _sync(device: torch.device) -> None:
    """Wait for the device: CUDA work is asynchronous, a timer must see it finished."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Trainer:
    """One variant of the training step: a model, its optimiser and the :class:`TrainStep` that
    ``pretrain`` runs, with its own step counter."""

    def __init__(self, cfg: Config, channels: int, device: torch.device, warn: Callable[[str], None],
                 steps_per_epoch: int):
        torch.manual_seed(cfg.run.seed)  # both variants start from the same weights
        self.method = build_method(cfg, channels).to(device)
        optimizer = build_optimizer(self.method.param_groups(), cfg.optim)
        self.train_step = TrainStep(self.method, optimizer, LrSchedule.from_config(cfg, steps_per_epoch), cfg,
                                    device, warn)
        self.steps = 0
        self.method.train()

    def step(self, views) -> torch.Tensor:
        out = self.train_step(views, self.steps)
        self.steps += 1
        return out["loss"].detach()

    @property
    def compile_state(self) -> str:
        return self.train_step.compile_state


def time_pipeline(loader, opts: BenchOptions, device: torch.device, channels_last: bool, epoch: int) -> float:
    """images/s of the loader alone (views made and on the device, nothing trained)."""
    batches = _batches(loader, epoch)
    for _ in range(opts.warmup):
        to_memory_format(next(batches)["views"], channels_last)
    _sync(device)
    t0, images = time.perf_counter(), 0
    for _ in range(opts.steps):
        views = to_memory_format(next(batches)["views"], channels_last)
        images += views[0].shape[0]
    _sync(device)
    return images / (time.perf_counter() - t0)


# Warm-up goes on until the step time settles: the median of the last STABLE_WINDOW rounds within
# STABLE_TOLERANCE of the window before (oneDNN and cuDNN pick kernels over several first calls).
STABLE_WINDOW, STABLE_TOLERANCE, MAX_WARMUP = 3, 0.05, 30


def warm_up(trainers: list[Trainer], views, opts: BenchOptions, device: torch.device) -> int:
    """At least ``opts.warmup`` untimed rounds, then more until the slowest trainer's step time is
    stable (at most MAX_WARMUP rounds); returns the rounds taken."""
    rounds: list[float] = []
    while len(rounds) < MAX_WARMUP:
        start = time.perf_counter()
        for t in trainers:
            t.step(views)
        _sync(device)
        rounds.append(time.perf_counter() - start)
        if len(rounds) >= max(opts.warmup, 2 * STABLE_WINDOW):
            now = statistics.median(rounds[-STABLE_WINDOW:])
            before = statistics.median(rounds[-2 * STABLE_WINDOW:-STABLE_WINDOW])
            if abs(now - before) <= STABLE_TOLERANCE * before:
                break
    return len(rounds)


def time_steps(trainers: list[Trainer], views, opts: BenchOptions, device: torch.device) -> list[list[float]]:
    """Seconds of each measured step of each trainer, the trainers taking turns step by step."""
    opts.warmup_taken = warm_up(trainers, views, opts, device) if opts.warmup else 0
    seconds: list[list[float]] = [[] for _ in trainers]
    for _ in range(opts.steps):
        for t, out in zip(trainers, seconds):
            start = time.perf_counter()
            t.step(views)
            _sync(device)
            out.append(time.perf_counter() - start)
    return seconds


def time_finite_check(trainer: Trainer, calls: int, device: torch.device) -> float:
    """Median seconds of the step's finite-gradient check (train/finite_guard.py) on the trainer's
    gradients as its last step left them: what the guard adds to every step."""
    seconds = []
    for _ in range(calls):
        start = time.perf_counter()
        gradients_finite(trainer.train_step.parameters)
        _sync(device)
        seconds.append(time.perf_counter() - start)
    return statistics.median(seconds)


def time_step_by_threads(trainer: Trainer, views, counts: list[int], opts: BenchOptions,
                         device: torch.device) -> dict[int, float]:
    """images/s of the step alone at each CPU thread count (run.threads), the counts taking turns in
    rounds of ``min(opts.steps, 5)`` timed steps after one untimed step; median per count."""
    before = torch.get_num_threads()
    seconds: dict[int, list[float]] = {c: [] for c in counts}
    try:
        for _ in range(max(1, min(opts.rounds, 3))):
            for count in counts:
                torch.set_num_threads(count)
                trainer.step(views)  # the pool of the new size spins up
                for _ in range(min(opts.steps, 5)):
                    start = time.perf_counter()
                    trainer.step(views)
                    _sync(device)
                    seconds[count].append(time.perf_counter() - start)
    finally:
        torch.set_num_threads(before)
    return {c: views[0].shape[0] / statistics.median(s) for c, s in seconds.items()}


def time_end_to_end(loader, trainer: Trainer, opts: BenchOptions, device: torch.device, epoch: int) -> float:
    """images/s of the loader feeding the trainer, as ``simsiam pretrain`` runs them."""
    batches = _batches(loader, epoch, trainer.method)
    for _ in range(opts.warmup):
        trainer.step(next(batches)["views"])
    return _fed_steps(batches, trainer, opts.steps, device)


def _fed_steps(batches: Iterator[dict], trainer: Trainer, steps: int, device: torch.device) -> float:
    """images/s of ``steps`` steps, each on the next batch from ``batches``, timed as a whole."""
    _sync(device)
    t0, images = time.perf_counter(), 0
    for _ in range(steps):
        batch = next(batches)
        trainer.step(batch["views"])
        images += batch["views"][0].shape[0]
    _sync(device)
    return images / (time.perf_counter() - t0)


def time_side_by_side(loader, trainer: Trainer, views, opts: BenchOptions, device: torch.device,
                      epoch: int) -> list[float]:
    """Our end to end as a fraction of our step alone, measured in alternating rounds.

    Each round times ``opts.steps`` steps on the synthetic tensors, then ``opts.steps`` steps fed by
    the loader, and gives the ratio of their images/s. A change of load on a shared machine moves
    both halves of a round alike, where the separate phases above are minutes apart.
    """
    batches = _batches(loader, epoch, trainer.method)
    trainer.step(next(batches)["views"])  # the loader's own first-call cost stays out of round 1
    ratios = []
    for _ in range(opts.rounds):
        _sync(device)
        start = time.perf_counter()
        for _ in range(opts.steps):
            trainer.step(views)
        _sync(device)
        alone = opts.steps * views[0].shape[0] / (time.perf_counter() - start)
        ratios.append(_fed_steps(batches, trainer, opts.steps, device) / alone)
    return ratios


def time_augment_kernels(loader, opts: BenchOptions, device: torch.device, channels_last: bool) -> Optional[dict]:
    """The pipeline alone with the C kernel and with the torch ops, in alternating rounds; None
    where ``loader`` does not run the kernel."""
    if not isinstance(loader, BatchedViewLoader) or not loader.augment.uses_native(device):
        return None
    with_torch_ops = copy.copy(loader)
    with_torch_ops.augment = copy.copy(loader.augment)
    with_torch_ops.augment.kernel = "torch"
    native, torch_ops = [], []
    for r in range(max(1, opts.rounds)):
        native.append(time_pipeline(loader, opts, device, channels_last, epoch=3 + r))
        torch_ops.append(time_pipeline(with_torch_ops, opts, device, channels_last, epoch=3 + r))
    return {"native": statistics.median(native), "torch": statistics.median(torch_ops),
            "ratio": statistics.median(a / b for a, b in zip(native, torch_ops)), "rounds": len(native)}


def flops_per_image(cfg: Config, channels: int, size: int, device: torch.device) -> float:
    """FLOPs of one image's training step: forward and backward of both views (matmuls and convs).

    Counted on a small batch: these FLOPs are linear in the batch (BN and elementwise ops, which
    FlopCounterMode does not count, are a small, memory-bound remainder).
    """
    from torch.utils.flop_counter import FlopCounterMode

    batch = min(cfg.optim.batch_size, 16)
    torch.manual_seed(cfg.run.seed)
    method = build_method(cfg, channels).to(device).train()
    gen = torch.Generator(device=device).manual_seed(0)
    views = tuple(torch.randn(batch, channels, size, size, device=device, generator=gen) for _ in range(method.num_views))
    counter = FlopCounterMode(display=False)
    with counter:
        method.training_step(views)["loss"].backward()
    return counter.get_total_flops() / batch


def _peak_memory(device: torch.device) -> dict:
    """This process's peak RSS (and CUDA allocation), plus the largest peak RSS of an ended worker."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # KiB on Linux
    return {**peak_memory(device), "peak_rss_workers_mb": round(children / 2**10, 1)}


# ------------------------------------------------------------------------------------------ run

def reference_config(cfg: Config) -> Config:
    """The reference implementation of ``cfg``'s run: per-image pipeline, eager fp32, NCHW."""
    ref = copy.deepcopy(cfg)
    ref.data.pipeline = "per_image"
    ref.run.channels_last, ref.run.amp, ref.run.compile = False, "off", "false"
    return ref


def run_bench(cfg: Config, opts: BenchOptions, warn: Callable[[str], None] = print,
              progress: Callable[[str], None] = lambda message: None) -> dict:
    """Measure ``cfg`` against :func:`reference_config` and return the figures as a JSON-ready dict."""
    cfg = resolve(copy.deepcopy(cfg))
    if opts.steps < 1 or opts.warmup < 0 or opts.rounds < 0:
        raise ValueError(f"--steps must be at least 1, --warmup and --rounds at least 0, got {opts.steps}, "
                         f"{opts.warmup} and {opts.rounds}")
    if opts.threads:
        torch.set_num_threads(opts.threads)
    device = dist.init(cfg.run.device)
    ref_cfg = reference_config(cfg)
    load_before, cpu_before = os.getloadavg(), others.sample()

    train_set, ref_set = _load_train_sets(cfg, opts)
    for c in (cfg, ref_cfg):  # a budget preset's epochs: the lr schedule the measured steps follow
        settle_budget(c, len(train_set))
    channels = train_set.channels
    size = cfg.data.image_size or train_set.image_size
    ours_loader = build_train_loader(train_set, cfg, 2, device)
    ref_loader = PerImageViewLoader(ref_set, ref_cfg, 2, device)
    # run.compile=auto as pretrain settles it, for the run these images and the config's epochs make
    compile_choice = settle_compile(cfg, device, cfg.model.in_channels or channels, size, len(ours_loader))
    ours, ref = (Trainer(c, channels, device, warn, len(ours_loader)) for c in (cfg, ref_cfg))
    if ours.method.num_views != 2:
        raise ValueError(f"bench measures two-view methods; {cfg.method} with loss.symmetry={cfg.loss.symmetry} "
                         f"needs {ours.method.num_views} views")
    reset_peak_memory(device)

    progress("data pipeline alone")
    pipeline = (time_pipeline(ours_loader, opts, device, cfg.run.channels_last, epoch=0),
                time_pipeline(ref_loader, opts, device, False, epoch=0))

    progress("training step alone (synthetic tensors), with the peak probes before and after")
    ours_dtype = amp_dtype(cfg.run.amp, device) or torch.float32
    dtypes = tuple(dict.fromkeys((torch.float32, ours_dtype)))
    peaks_before = measure_peaks(device, dtypes, opts.matmul_size)
    gen = torch.Generator(device=device).manual_seed(cfg.run.seed)
    views = tuple(torch.randn(cfg.optim.batch_size, channels, size, size, device=device, generator=gen)
                  for _ in range(2))
    step_seconds = time_steps([ours, ref], views, opts, device)
    peaks_after = measure_peaks(device, dtypes, opts.matmul_size)
    step = tuple(cfg.optim.batch_size / statistics.median(s) for s in step_seconds)
    finite_check = time_finite_check(ours, 20, device)
    by_threads = None
    if device.type == "cpu" and not opts.threads and usable_cores() > 1:
        progress("training step alone at each thread count")
        by_threads = time_step_by_threads(ours, views, candidates(usable_cores()), opts, device)

    progress("both together")
    end_to_end = (time_end_to_end(ours_loader, ours, opts, device, epoch=1),
                  time_end_to_end(ref_loader, ref, opts, device, epoch=1))

    progress(f"our step alone and both together, side by side ({opts.rounds} rounds)")
    side_by_side = time_side_by_side(ours_loader, ours, views, opts, device, epoch=2) if opts.rounds else []

    progress("the data pipeline alone by augmentation kernel")
    kernels = time_augment_kernels(ours_loader, opts, device, cfg.run.channels_last)

    load_after, others_busy = os.getloadavg(), others.busy_cores(cpu_before, others.sample())
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    flops = flops_per_image(cfg, channels, size, device)
    peaks = {k: max(peaks_before[k], peaks_after[k]) for k in peaks_before}
    ours_pipeline = "per_image" if isinstance(ours_loader, PerImageViewLoader) else "batched"
    ours_workers, ref_workers = getattr(ours_loader, "workers", 0), ref_loader.workers
    ours_kernel = ("native" if kernels else "torch") if isinstance(ours_loader, BatchedViewLoader) else None
    del ours_loader, ref_loader  # ends the persistent workers, so their peak RSS is counted below
    return {
        "preset": cfg.preset,
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else _cpu_name(),
        "cpu_cores": cores,
        "threads": torch.get_num_threads(),
        "allocator": allocator_state(),
        "torch": torch.__version__,
        "batch_size": cfg.optim.batch_size,
        "image_shape": [channels, size, size],
        "dataset": {"name": train_set.name, "images": len(train_set), "synthetic": opts.synthetic},
        "steps": opts.steps,
        "warmup": opts.warmup,
        "warmup_rounds_until_stable": opts.warmup_taken,
        "load_avg_before": [round(x, 2) for x in load_before],
        "load_avg_after": [round(x, 2) for x in load_after],
        "other_processes_cores": None if others_busy is None else round(others_busy, 2),
        "load_moved": (others_busy > others.BUSY_BY_OTHERS if others_busy is not None
                       else load_moved(load_before, load_after)),
        "ours": {"pipeline": ours_pipeline, "workers": ours_workers, "augment_kernel": ours_kernel,
                 "channels_last": cfg.run.channels_last,
                 "amp": dtype_name(ours_dtype), "compile": ours.compile_state, "compile_choice": compile_choice.line},
        "reference": {"pipeline": "per_image", "workers": ref_workers, "channels_last": False, "amp": "fp32",
                      "compile": "off"},
        "images_per_s": {name: _pair(pair) for name, pair in
                         (("pipeline", pipeline), ("step", step), ("end_to_end", end_to_end))},
        # Our pipeline alone with the C augmentation kernel and with the torch ops (None: no kernel).
        "pipeline_by_augment_kernel": kernels,
        # The figure for "how much of the step's speed does the pipeline cost": both phases alternate.
        "end_to_end_vs_step": {"median": statistics.median(side_by_side) if side_by_side else None,
                               "rounds": [round(r, 4) for r in side_by_side], "steps_per_round": opts.steps},
        "step_seconds_median": {"ours": statistics.median(step_seconds[0]), "reference": statistics.median(step_seconds[1])},
        # The finite-gradient check alone (part of every step) and its share of our step.
        "finite_check": {"seconds_median": finite_check,
                         "fraction_of_step": finite_check / statistics.median(step_seconds[0])},
        # Our step alone at each intra-op thread count run.threads=auto chooses from (None: not measured).
        "step_images_per_s_by_threads": by_threads,
        **_flops_figures(flops, step, peaks, ours_dtype),
        "peak_probes_before": peaks_before,
        "peak_probes_after": peaks_after,
        "matmul_size": opts.matmul_size or (8192 if device.type == "cuda" else 2048),
        "memory": _peak_memory(device),
        "config": cfg.to_dict(),
    }


def load_moved(before: tuple, after: tuple) -> bool:
    """Where CPU times are not readable (not Linux): whether the 1-minute load average changed by
    half a core or more. The bench's own threads move it too, so this errs towards warning."""
    return abs(after[0] - before[0]) >= 0.5


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _flops_figures(flops: float, step: tuple[float, float], peaks: dict[str, float], ours_dtype: torch.dtype) -> dict:
    """Achieved FLOP/s of both steps, each against the best probe of its precision and the fp32 matmul."""
    achieved = {"ours": flops * step[0], "reference": flops * step[1]}
    best = {"ours": best_peak(peaks, ours_dtype), "reference": best_peak(peaks, torch.float32)}
    return {
        "flops_per_image": flops,
        "achieved_flops": achieved,
        "peak_probes": peaks,
        "peak_flops": {side: value for side, (_, value) in best.items()},
        "peak_probe_used": {side: name for side, (name, _) in best.items()},
        "fraction_of_peak": {side: achieved[side] / best[side][1] for side in achieved},
        "matmul_peak_flops": peaks["matmul_fp32"],
        "fraction_of_matmul_peak": {side: achieved[side] / peaks["matmul_fp32"] for side in achieved},
    }


def _pair(pair: tuple[float, float]) -> dict:
    ours, ref = pair
    return {"ours": ours, "reference": ref, "ratio": ours / ref}
