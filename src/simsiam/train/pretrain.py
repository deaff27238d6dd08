"""Pretraining: one entry point for one process and for torchrun.

``pretrain(cfg)`` reads top to bottom as the run does: set up (config, data, method, optimiser,
step, monitors, resume) -> epochs (each: train, epoch record, monitors, atomic checkpoint) ->
outputs (the Figure 2 plots and ``report.md``). A stop signal (``stop.py``) ends an epoch early
with a mid-epoch checkpoint, from which a resumed run continues exactly where it stopped.
"""
from __future__ import annotations

import contextlib
import copy
import json
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import torch
from torch import nn

from ..artifacts import checkpoint as ckpt_io
from ..artifacts.report import git_commit, write_outputs
from ..artifacts.run_lock import DirectoryBusy, DirectoryLock
from ..artifacts.runlog import RunLog, read_metrics
from ..config import Config, from_dict
from ..data import load_dataset
from ..data.cache import decoded_if_configured
from ..data.encoded_store import encoded_if_configured
from ..data.loaders import build_train_loader, local_batch_size
from ..data.subset import describe, subset
from ..eval.baselines import baseline_knn, cached_baseline_knn, verdict
from ..eval.monitor import KnnMonitor, is_collapsed, normalised_std
from ..methods import build_method
from ..methods.base import Method
from ..models import BACKBONES, CUSTOM_PREFIX
from ..optim import build_optimizer
from ..parallel import distributed as dist
from ..resolve import resolve
from ..seeding import seed_everything
from . import speed
from .allocator import keep_freed_memory
from .budget import settle_budget
from .compile_pays import settle as settle_compile
from .finite_guard import APPLIED, STOP, SWITCH_TO_FP32, stop_message, switch_line
from .loop import EpochTotals, run_epoch
from .pictures import log_augmented_views, log_embedding_projector
from .resources import peak_memory, reset_peak_memory
from .resume import check_resume
from .step import LrSchedule, TrainStep
from .stop import Interrupted, Poll, StopRequest, resume_line
from .threads import ThreadTuner, plan_threads


class TrainingDiverged(RuntimeError):
    """The loss became NaN or inf, or steps in a row had non-finite gradients; the last checkpoint,
    if any, is left as it was."""


@dataclass
class RunResult:
    run_dir: Path
    epochs_done: int
    final: dict = field(default_factory=dict)  # the last epoch's metrics record
    stopped_early: str = ""  # why the run stopped before its last epoch: "collapse", "signal" ("" when it did not)
    stop_line: str = ""  # after a stop signal: the one line saying how to resume
    images: str = ""  # the training and evaluation images, subsets named with their seed


@dataclass
class _Run:
    """Everything the epochs need, built once by :func:`_set_up`."""

    cfg: Config
    device: torch.device
    run_dir: Path
    log: RunLog
    method: Method
    optimizer: torch.optim.Optimizer
    loader: object
    train_step: TrainStep
    knn: Optional[KnnMonitor]
    images: str  # what the run trains and evaluates on (RunResult.images)
    poll: Poll
    eval_set: object = None  # the kNN monitor's labelled queries (the embedding projector shows them)
    start_epoch: int = 0
    step: int = 0  # optimiser steps taken so far
    resumed_position: Optional[EpochTotals] = None  # where in start_epoch a mid-epoch checkpoint left off
    # A backbone of your own as it was passed, untrained: the random-init baseline (cfg cannot build it).
    initial_backbone: Optional[nn.Module] = None
    amp_requested: str = "auto"  # run.amp as the user set it; cfg.run.amp holds what the run uses
    threads: Optional[ThreadTuner] = None  # run.threads=auto on a CPU with several usable cores


def pretrain(cfg: Config, resume: bool = False, stop: Optional[StopRequest] = None,
             backbone: Optional[nn.Module] = None) -> RunResult:
    """Pretrain as ``cfg`` says; with ``resume`` continue the run in ``cfg.run.out_dir`` from its checkpoint.

    ``backbone``: a module of your own instead of ``cfg.model.backbone`` (it needs ``num_features``
    and a forward returning pooled features ``(B, num_features)``); the run records its class name,
    and resuming or loading the run takes the module again.
    Under torchrun this same call runs in every process (DDP, SyncBN, the global batch split over
    ranks); only rank 0 writes. SIGTERM, SIGINT and SIGUSR1 (or ``stop.request(...)``) end the run
    after the current step with a checkpoint: ``result.stopped_early == "signal"``.
    """
    keep_freed_memory()  # the CLI has done so already; this is for the Python API
    # The run directory's lock (taken by rank 0 in _prepare_run_dir) is held until the outputs are
    # written, and released on every way out, an exception included.
    with contextlib.ExitStack() as held:
        with stop or StopRequest() as stop:
            run = _set_up(cfg, resume, stop, backbone, held)
            try:
                result = _train_epochs(run)
            except Interrupted as err:
                err.run_dir = run.run_dir  # for the CLI's line: which checkpoint is left
                run.log.close()
                raise
        if result.stopped_early != "signal":
            _compare_with_baselines(run, result)
            if run.eval_set is not None and "tensorboard" in run.cfg.run.loggers:
                log_embedding_projector(run.log, run.method.backbone, run.eval_set, device=run.device,
                                        image_size=run.cfg.data.image_size, step=run.step)
        run.log.close()
        if dist.is_main() and result.stopped_early != "signal":
            write_outputs(run.run_dir, run.cfg, result)
    return result


# ------------------------------------------------------------------------------------------ set-up

def _set_up(cfg: Config, resume: bool, stop: StopRequest, backbone: Optional[nn.Module],
            held: contextlib.ExitStack) -> _Run:
    saved = ckpt_io.load(Path(cfg.run.out_dir) / "checkpoint.pt", resuming=True) if resume else None
    cfg = copy.deepcopy(cfg)
    if backbone is not None:  # named before the resume check, which compares it with the run's
        cfg.model.backbone = CUSTOM_PREFIX + type(backbone).__name__
    train_files, eval_files = _choose_images(cfg)  # before any output: missing data fails here
    budget_line = settle_budget(cfg, len(train_files))
    if saved is not None:  # a resumed run keeps its recipe; only resume.CHANGEABLE_ON_RESUME may differ
        check_resume(saved, cfg, Path(cfg.run.out_dir))
    cfg = resolve(cfg)
    device = dist.init(cfg.run.device)
    amp_requested = cfg.run.amp
    saved_amp = saved["config"]["run"]["amp"] if saved is not None else None
    if saved is not None and cfg.run.amp in ("auto", saved_amp):  # unchanged: what the run was asked for and
        amp_requested = saved.get("amp_requested", saved_amp)  # what it uses now (fp32 after leaving bf16)
        cfg.run.amp = saved_amp
    cfg.run.amp, precision = speed.resolve_amp(cfg.run.amp, device)  # saved as chosen: a resume keeps it
    thread_counts, threads_words = plan_threads(cfg.run.threads, device.type, cfg.run.deterministic)
    reset_peak_memory(device)  # this run's peak, not that of an earlier run in the same process
    git_commit()  # the commit the report will name: the code as it is now, when this process runs it
    local_batch_size(cfg.optim.batch_size)  # the global batch must split evenly: fail before any output
    if cfg.run.deterministic:
        torch.use_deterministic_algorithms(True)
    seed_everything(cfg.run.seed)

    run_dir = _prepare_run_dir(cfg, resume, held)
    log = RunLog(run_dir, quiet=cfg.run.quiet, loggers=cfg.run.loggers, resume_step=saved["step"] if saved else 0)
    if budget_line and saved is None and dist.is_main():
        log.info(budget_line)
    train_set, eval_set = _decode(cfg, train_files, eval_files, log, device)
    initial_backbone = copy.deepcopy(backbone) if backbone is not None else None
    method = build_method(cfg, train_set.channels, backbone).to(device)
    optimizer = build_optimizer(method.param_groups(), cfg.optim)
    loader = build_train_loader(train_set, cfg, method.num_views, device)
    stored_compile = from_dict(saved["config"]).run.compile if saved is not None else None  # an old bool: its word
    compile_line = settle_compile(cfg, device, cfg.model.in_channels or train_set.channels,
                                  cfg.data.image_size or train_set.image_size, len(loader), stored_compile).line
    if dist.is_main():
        _write_config(run_dir, cfg)  # again: run.compile as settled, which needed the loader's length
    train_step = TrainStep(method, optimizer, LrSchedule.from_config(cfg, len(loader)), cfg, device, log.warn,
                           amp_requested=amp_requested, info=log.info)
    knn = None
    if eval_set is not None:
        knn = KnnMonitor(train_set, eval_set, k=cfg.monitor.knn_k, t=cfg.monitor.knn_t, device=device,
                         image_size=cfg.data.image_size, channels_last=cfg.run.channels_last)
    images = f"train {describe(train_set)}" + (f", kNN queries {describe(eval_set)}" if eval_set is not None else "")
    poll = Poll(stop, cfg.run.checkpoint_every_steps, cfg.run.checkpoint_every_minutes,
                cfg.run.epoch_checkpoint_minutes)
    run = _Run(cfg, device, run_dir, log, method, optimizer, loader, train_step, knn, images, poll, eval_set,
               initial_backbone=initial_backbone, amp_requested=amp_requested,
               threads=ThreadTuner(thread_counts, log.info) if thread_counts else None)
    if saved is not None:
        _restore(run, saved)
        log.info(compile_line)
        return run
    log_augmented_views(log, loader, train_set, epoch=0)
    if dist.is_main():
        log.info(f"run {run_dir}: {cfg.method}, {_backbone_words(cfg, method)}, "
                 f"{describe(train_set)}, batch {cfg.optim.batch_size}, lr {train_step.schedule.peak_lr:.4g}, "
                 f"{cfg.optim.epochs} epochs x {len(loader)} steps, device {device}, "
                 f"{loader.describe()}, {dist.world_size()} process(es), precision {precision}, {threads_words}")
        log.info(compile_line)
    return run


def _backbone_words(cfg: Config, method: Method) -> str:
    if cfg.model.backbone in BACKBONES:
        return f"{cfg.model.backbone} (width {cfg.model.width})"
    params = sum(p.numel() for p in method.backbone.parameters())
    return f"{cfg.model.backbone} ({params / 1e6:.2f}M parameters, {method.backbone.num_features} features)"


def _prepare_run_dir(cfg: Config, resume: bool, held: contextlib.ExitStack) -> Path:
    """The run directory, locked by rank 0 (the one process that writes) for as long as ``held``
    lasts, checked and given the run's ``config.json``."""
    run_dir = Path(cfg.run.out_dir)
    problem, busy = "", ""
    if dist.is_main():
        try:  # first: what another process is doing there is no ground for any other verdict
            held.enter_context(DirectoryLock(run_dir, "run"))
        except DirectoryBusy as err:
            busy = str(err)
    busy = dist.broadcast_object(busy)
    if busy:
        raise DirectoryBusy(busy)
    if dist.is_main():
        if not resume and (run_dir / "checkpoint.pt").exists():
            problem = (f"{run_dir} already holds a run; resume it with --resume, or choose another "
                       "--out-dir (run.out_dir=...)")
        else:
            run_dir.mkdir(parents=True, exist_ok=True)
            stale = ckpt_io.remove_stale_temporaries(run_dir)
            if stale:
                print(f"removed {len(stale)} temporary file(s) left by an interrupted checkpoint write in {run_dir}",
                      file=sys.stderr)
            _write_config(run_dir, cfg)
    # Rank 0 alone looks at the directory; every rank raises its verdict, so no rank is left
    # waiting in a collective for one that has exited.
    problem = dist.broadcast_object(problem)
    if problem:
        raise FileExistsError(problem)
    return run_dir


def _write_config(run_dir: Path, cfg: Config) -> None:
    ckpt_io.write_atomic(run_dir / "config.json", lambda fh: fh.write(json.dumps(cfg.to_dict(), indent=2).encode()))


def _choose_images(cfg: Config):
    """The training images and the kNN monitor's queries (None without an eval split), subsets taken."""
    d = cfg.data
    train_set = subset(load_dataset(d.dataset, "train", d.data_dir), d.train_limit)
    eval_set = subset(load_dataset(d.dataset, d.eval_split, d.data_dir), d.eval_limit) if d.eval_split else None
    return train_set, eval_set


def _decode(cfg: Config, train_set, eval_set, log: RunLog, device: torch.device):
    """Image folders decoded into the memory-mapped cache where ``data.cache`` allows (data/cache.py);
    a training folder the cache does not take (or data.pipeline=encoded) in a store of its bytes
    (data/encoded_store.py) where the encoded pipeline is chosen."""
    if cfg.data.pipeline != "encoded":
        train_set = decoded_if_configured(train_set, cfg.data, log.info, log.warn, log.shows_bars)
    train_set = encoded_if_configured(train_set, cfg.data, device, log.info, log.warn, log.shows_bars)
    if eval_set is not None:
        eval_set = decoded_if_configured(eval_set, cfg.data, log.info, log.warn, log.shows_bars)
    return train_set, eval_set


def _restore(run: _Run, saved: dict) -> None:
    """Weights, optimiser, position and RNG state from the checkpoint, after everything is built
    (building draws random numbers; the restored state must be the last word)."""
    ckpt_io.load_model_state(run.method, saved["model"])
    run.optimizer.load_state_dict(saved["optimizer"])
    run.start_epoch, run.step = saved["epoch"], saved["step"]
    where = ""
    if saved.get("position"):
        run.resumed_position = EpochTotals.from_state(saved["position"], run.device)
        batches = run.resumed_position.batches
        if batches >= len(run.loader) or not run.method.resumable_at(batches):
            raise ckpt_io.CheckpointError(
                f"{run.run_dir / 'checkpoint.pt'} was written after batch {batches} of epoch {run.start_epoch + 1}, "
                f"where this run ({run.cfg.method}, {len(run.loader)} batches an epoch) cannot continue exactly; "
                "start the run anew")
        where = f", batch {batches + 1}/{len(run.loader)}"
    ckpt_io.set_rng_state(saved["rng"])
    # drop records of the steps the interruption cut short: the resumed run redoes them
    run.log.keep_until(run.start_epoch, run.step)
    if run.start_epoch >= run.cfg.optim.epochs:
        run.log.info(f"{run.run_dir} finished its {run.cfg.optim.epochs} epochs (step {run.step}); its figures again:")
    else:
        run.log.info(f"resuming {run.run_dir} at epoch {run.start_epoch + 1}/{run.cfg.optim.epochs}{where} "
                     f"(step {run.step})")


# ------------------------------------------------------------------------------------------ epochs

def _train_epochs(run: _Run) -> RunResult:
    cfg = run.cfg
    result = RunResult(run_dir=run.run_dir, epochs_done=run.start_epoch, images=run.images)
    record: dict = {}
    for epoch in range(run.start_epoch, cfg.optim.epochs):
        run.method.train()
        position, run.resumed_position = run.resumed_position, None
        run.log.start_epoch(epoch, cfg.optim.epochs, len(run.loader))
        totals = run_epoch(run.train_step, run.loader, epoch, run.step, run.device, _AfterStep(run, epoch),
                           totals=position, threads=run.threads)  # counts run.step on
        run.log.end_epoch()
        if totals.stopped:
            _stop(run, epoch, totals, result)
            return result

        record = _epoch_record(run, epoch, totals)
        run.log.write(record)
        is_last = epoch + 1 == cfg.optim.epochs
        run.log.epoch_line(_epoch_line(record, cfg), always=is_last or "knn_acc" in record)
        collapsed = is_collapsed(record["z_std_sqrt_d"], cfg.monitor.collapse_threshold)
        if collapsed:
            run.log.warn(f"representation collapsing: std(z/|z|) x sqrt(d) = {record['z_std_sqrt_d']:.3f} is under "
                         f"monitor.collapse_threshold={cfg.monitor.collapse_threshold} (healthy is about 1)")
        ends_here = is_last or (collapsed and cfg.monitor.stop_on_collapse)
        save, stop = run.poll.at_epoch_end(last=ends_here)
        if save:
            _checkpoint(run, epoch + 1)
        result.epochs_done = epoch + 1
        if collapsed and cfg.monitor.stop_on_collapse:
            result.stopped_early = "collapse"
            run.log.warn("stopping: monitor.stop_on_collapse is set")
            break
        if stop and not is_last:
            _stop(run, epoch + 1, None, result)
            return result
    result.final = record or _last_epoch_record(run.run_dir)
    return result


def _stop(run: _Run, epoch: int, totals: Optional[EpochTotals], result: RunResult) -> None:
    """A stop was requested: checkpoint here (mid-epoch when ``totals``), say why in metrics.jsonl
    and in one line how to resume."""
    if totals is not None:
        _checkpoint(run, epoch, totals)
        position = f"at step {run.step} (epoch {epoch + 1}, batch {totals.batches}/{len(run.loader)})"
    else:
        position = f"at step {run.step} (after epoch {epoch})"
    reason = run.poll.stop.reason
    run.log.write({"kind": "stopped", "epoch": epoch, "step": run.step, "reason": reason,
                   "batches_done": totals.batches if totals else 0})
    result.epochs_done = epoch
    result.stopped_early = "signal"
    result.stop_line = resume_line(run.run_dir, reason, position, dist.world_size() > 1)
    result.final = _last_epoch_record(run.run_dir)


class _AfterStep:
    """After each step: the step record and progress (:class:`_StepLogger`), then the stop and
    periodic-checkpoint poll; True ends the epoch (a stop was requested)."""

    def __init__(self, run: _Run, epoch: int):
        self.run, self.epoch, self.logger = run, epoch, _StepLogger(run, epoch)

    def __call__(self, step: int, out: dict, images: int, totals: EpochTotals) -> bool:
        run = self.run
        run.step = step
        if out["verdict"] != APPLIED:
            _not_applied(run, step, out["verdict"])
        self.logger(step, out, images)
        save, stop = run.poll.after_step(step)
        if totals.batches >= len(run.loader) or not run.method.resumable_at(totals.batches):
            return False  # the epoch's end checkpoints (and stops); or a position the method cannot resume from
        if save and not stop:
            _checkpoint(run, self.epoch, totals)
        return stop


def _not_applied(run: _Run, step: int, verdict: str) -> None:
    """A step with non-finite gradients was skipped (finite_guard.py): leave bf16 for good, or stop."""
    if verdict == SWITCH_TO_FP32:
        run.cfg.run.amp = "off"  # the checkpoints' config from here on: a resume keeps fp32
        run.log.warn(switch_line(step, run.device.type))
        run.log.write({"kind": "precision", "step": step, "amp": "off",
                       "reason": "non-finite gradients under bf16 (run.amp=auto)"})
        if dist.is_main():
            _write_config(run.run_dir, run.cfg)
    elif verdict == STOP:
        guard = run.train_step.nonfinite
        run.log.write({"kind": "diverged", "step": step, "reason": "non-finite gradients", "amp": run.cfg.run.amp})
        raise TrainingDiverged(stop_message(guard.first_skipped_step + 1, step, run.cfg.run.amp, run.run_dir,
                                            has_checkpoint=(run.run_dir / "checkpoint.pt").exists()))


class _StepLogger:
    """After each step: every ``run.log_every`` steps a step record (loss over all ranks, lr, images/s),
    its line where the log shows step lines, and the NaN guard; the progress bar every step."""

    def __init__(self, run: _Run, epoch: int):
        self.run, self.epoch = run, epoch
        self.since, self.images = time.perf_counter(), 0

    def __call__(self, step: int, out: dict, images: int) -> None:
        run = self.run
        self.images += images * dist.world_size()
        postfix = None
        if step % run.cfg.run.log_every == 0:
            loss = dist.all_reduce_mean(out["loss"].detach()).item()
            if not math.isfinite(loss) and out["verdict"] == APPLIED:  # a skipped step's loss: the guard's
                _diverged(run, self.epoch, step, loss)
            now = time.perf_counter()
            ips = self.images / (now - self.since)
            self.since, self.images = now, 0
            lr = out["lr"]
            run.log.write({"kind": "step", "epoch": self.epoch, "step": step, "loss": loss, "lr": lr,
                           "images_per_s": round(ips, 1)})
            postfix = {"loss": f"{loss:.4f}", "lr": f"{lr:.3g}", "img/s": f"{ips:.0f}"}
            if run.log.step_lines:
                run.log.info(f"epoch {self.epoch + 1} step {step} loss {loss:.4f} lr {lr:.4g} {ips:.0f} img/s")
        run.log.step(postfix)


def _epoch_record(run: _Run, epoch: int, totals: EpochTotals) -> dict:
    """The epoch's metrics record: loss and collapse std over all ranks, speed, memory, skipped
    images, and the kNN monitor when it is due."""
    cfg = run.cfg
    if totals.steps == 0:
        examples = ", ".join(str(p) for p in dist.all_gather_objects(totals.skipped)[:2])
        raise ValueError(f"epoch {epoch + 1} had no usable batch: every image was unreadable (e.g. {examples}); "
                         f"check the files under data.data_dir={cfg.data.data_dir} (are they images? readable?)")
    applied = max(totals.applied_steps, 1)  # the same on every rank: the ranks skip together
    loss = dist.all_reduce_mean(totals.loss_sum / applied).item()
    if not math.isfinite(loss):
        _diverged(run, epoch, run.step, loss)
    std = dist.all_reduce_mean(totals.std_sum / applied).item()
    record = {"kind": "epoch", "epoch": epoch, "epochs_done": epoch + 1, "step": run.step, "loss": loss,
              "z_std": std, "z_std_sqrt_d": normalised_std(std, totals.last["z"].shape[1]), "lr": totals.last["lr"],
              "epoch_seconds": round(totals.seconds, 2),
              "images_per_s": round(totals.steps * cfg.optim.batch_size / totals.seconds, 1),
              **peak_memory(run.device)}
    if totals.skipped_steps:
        record["skipped_steps"] = totals.skipped_steps
    all_skipped = dist.all_gather_objects(totals.skipped)  # collective: every rank calls it, skipped or not
    if all_skipped:
        record["skipped_images"] = len(all_skipped)
        run.log.warn(f"epoch {epoch + 1}: skipped {len(all_skipped)} unreadable image(s), e.g. {all_skipped[:3]}")
    is_last = epoch + 1 == cfg.optim.epochs
    if run.knn is not None and ((epoch + 1) % cfg.monitor.every == 0 or is_last):
        record.update(run.knn(run.method.backbone))
    return record


def _compare_with_baselines(run: _Run, result: RunResult) -> None:
    """Raw pixels and the random-init network under the same kNN protocol (cached per dataset):
    recorded, reported, and said plainly when the representation is below the pixels."""
    cfg = run.cfg
    if run.knn is None or not cfg.monitor.baselines or "knn_acc" not in result.final:
        return
    if run.initial_backbone is not None:
        # Not cached: a class name does not say how the module was built.
        base = baseline_knn(cfg, k=cfg.monitor.knn_k, t=cfg.monitor.knn_t, device=str(run.device),
                            random_backbone=run.initial_backbone)
    else:
        base = cached_baseline_knn(cfg, k=cfg.monitor.knn_k, t=cfg.monitor.knn_t, device=str(run.device))
    result.final["baselines"] = base
    run.log.write({"kind": "baselines", "k": cfg.monitor.knn_k, "t": cfg.monitor.knn_t, **base})
    run.log.info(verdict(result.final["knn_acc"], base))


def _checkpoint(run: _Run, epochs_done: int, position: Optional[EpochTotals] = None) -> None:
    """The run's state to ``checkpoint.pt``, atomically; mid-epoch, ``position`` says where in epoch
    ``epochs_done`` (the steps done in it, the sums so far) the run continues."""
    bad: list[str] = []
    if dist.is_main():
        extra = {"amp_requested": run.amp_requested}
        if position is not None:
            extra["position"] = position.state()
        ckpt = ckpt_io.make_checkpoint(model=run.method, optimizer=run.optimizer, epoch=epochs_done, step=run.step,
                                       config=run.cfg.to_dict(), extra=extra)
        # The last line of defence: weights that went NaN or inf are never written over a good checkpoint.
        bad = ckpt_io.non_finite_tensors(ckpt)
        if not bad:
            ckpt_io.save_atomic(ckpt, run.run_dir / "checkpoint.pt")
            ckpt_io.keep_recent(run.run_dir / "checkpoint.pt", run.step, run.cfg.run.keep_checkpoints)
    bad = dist.broadcast_object(bad)  # every rank stops, none waits alone in the barrier
    if bad:
        _non_finite_weights(run, epochs_done, bad)
    run.poll.saved(run.step)
    dist.barrier()


def _epoch_line(r: dict, cfg: Config) -> str:
    knn = f"  kNN {r['knn_acc']:.2f}%" if "knn_acc" in r else ""
    skipped = f"  {r['skipped_steps']} step(s) skipped (non-finite gradients)" if r.get("skipped_steps") else ""
    return (f"epoch {r['epochs_done']}/{cfg.optim.epochs}  loss {r['loss']:.4f}  std*sqrt(d) {r['z_std_sqrt_d']:.3f}"
            f"{knn}  {r['images_per_s']:.0f} img/s  {r['epoch_seconds']:.0f}s{skipped}")


def _last_epoch_record(run_dir: Path) -> dict:
    epochs = [r for r in read_metrics(run_dir) if r.get("kind") == "epoch"]
    return epochs[-1] if epochs else {}


def _diverged(run: _Run, epoch: int, step: int, value: float):
    run.log.write({"kind": "diverged", "epoch": epoch, "step": step, "loss": value})
    if run.cfg.run.amp == "bf16":  # bf16's narrower mantissa, or one of its kernels, is then a suspect too
        advice = (f"the run was in bf16: resume it in fp32 with: simsiam pretrain --resume {run.run_dir} run.amp=off "
                  "(or lower optim.base_lr / add optim.warmup_epochs and start anew)")
    else:
        advice = "lower optim.base_lr or add optim.warmup_epochs, then start anew (resuming would replay the same steps)"
    raise TrainingDiverged(
        f"the loss became {value} at step {step} (epoch {epoch + 1}); training stopped. {_last_checkpoint(run)}{advice}")


def _non_finite_weights(run: _Run, epochs_done: int, bad: list[str]):
    shown = ", ".join(bad[:3]) + (f" and {len(bad) - 3} more" if len(bad) > 3 else "")
    run.log.write({"kind": "diverged", "epoch": epochs_done, "step": run.step, "non_finite": bad[:20]})
    raise TrainingDiverged(
        f"the weights became NaN or inf by step {run.step} in {len(bad)} tensor(s) ({shown}); "
        f"the checkpoint was not written. {_last_checkpoint(run)}"
        "lower optim.base_lr or add optim.warmup_epochs, then start anew (resuming would replay the same steps)")


def _last_checkpoint(run: _Run) -> str:
    """What is left to fall back on, named only when there is something."""
    path = run.run_dir / "checkpoint.pt"
    return f"The last checkpoint, {path}, is intact -- " if path.exists() else "No checkpoint was written yet -- "
