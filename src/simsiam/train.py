"""Pretraining: one entry point for one process and for torchrun.

``pretrain(cfg)`` resolves the config, builds data, model, optimiser and monitors, then runs the
epochs. Each epoch ends with the monitors (collapse std, kNN), a metrics record and an atomic
checkpoint; the run ends with the Figure 2 plots and ``report.md``.
"""
from __future__ import annotations

import copy
import json
import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from . import checkpoint as ckpt_io
from . import distributed as dist
from . import speed
from .config import Config, from_dict, resolve
from .data import load_dataset
from .data.subset import subset
from .loaders import build_train_loader, local_batch_size
from .methods import build_method
from .monitor import KnnMonitor, collapse_std, is_collapsed, normalised_std
from .optim import build_optimizer, cosine_lr, scaled_lr, set_lr
from .report import git_commit
from .resources import peak_memory, reset_peak_memory
from .runlog import RunLog, read_metrics
from .sync_bn import convert_sync_batchnorm


class TrainingDiverged(RuntimeError):
    """The loss became NaN or inf; the last good checkpoint is left as it was."""


@dataclass
class RunResult:
    run_dir: Path
    epochs_done: int
    final: dict = field(default_factory=dict)  # the last epoch's metrics record
    stopped_early: str = ""  # why the run stopped before its last epoch ("" when it did not)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


class _TrainStep(nn.Module):
    """Makes the method's ``training_step`` the module's forward, so DDP syncs its gradients."""

    def __init__(self, method: nn.Module):
        super().__init__()
        self.method = method

    def forward(self, views):
        return self.method.training_step(views)


def _autocast(cfg: Config, device: torch.device):
    return speed.autocast(cfg.run.amp, device)  # run.amp=auto: bf16 on CUDA; on CPU see speed.CPU_AUTO_BF16


def _wrap_for_training(method: nn.Module, cfg: Config, device: torch.device, log: RunLog) -> nn.Module:
    if cfg.run.channels_last:
        method.to(memory_format=torch.channels_last)
    step = _TrainStep(method)
    if dist.is_enabled():
        # Every BN of backbone and heads normalises over the global batch (paper); torch's own
        # SyncBatchNorm is GPU-only, so the conversion picks a CPU-capable one on gloo.
        step = convert_sync_batchnorm(step, device) if cfg.run.sync_bn else step
        step = nn.parallel.DistributedDataParallel(step, device_ids=[device.index] if device.type == "cuda" else None)
    if cfg.run.compile:  # the whole step, DDP included (torch's advice); eager, with a warning, if it fails
        step = speed.compile_with_fallback(step, log.warn)
    return step


def _prepare_run_dir(cfg: Config, resume: bool) -> Path:
    run_dir = Path(cfg.run.out_dir)
    problem = ""
    if dist.is_main():
        if not resume and (run_dir / "checkpoint.pt").exists():
            problem = (f"{run_dir} already holds a run; resume it with --resume, or choose another "
                       "--out-dir (run.out_dir=...)")
        else:
            run_dir.mkdir(parents=True, exist_ok=True)
            with open(run_dir / "config.json", "w") as fh:
                json.dump(cfg.to_dict(), fh, indent=2)
    # Rank 0 alone looks at the directory; every rank raises its verdict, so no rank is left
    # waiting in a collective for one that has exited.
    problem = dist.broadcast_object(problem)
    if problem:
        raise FileExistsError(problem)
    return run_dir


def _load_data(cfg: Config):
    d = cfg.data
    train_set = subset(load_dataset(d.dataset, "train", d.data_dir), d.train_limit)
    eval_set = subset(load_dataset(d.dataset, d.eval_split, d.data_dir), d.eval_limit) if d.eval_split else None
    return train_set, eval_set


def pretrain(cfg: Config, resume: bool = False) -> RunResult:
    """Pretrain as ``cfg`` says; with ``resume`` continue the run in ``cfg.run.out_dir`` from its checkpoint.

    Under torchrun this same call runs in every process (DDP, SyncBN, the global batch split over
    ranks); only rank 0 writes.
    """
    if resume:
        saved = ckpt_io.load(Path(cfg.run.out_dir) / "checkpoint.pt")
        caller = cfg
        cfg = from_dict(saved["config"])  # the run's own recipe; only where and how to show it may change
        cfg.optim.epochs = max(caller.optim.epochs, cfg.optim.epochs)  # resume may extend a finished run
        cfg.run.out_dir, cfg.run.quiet, cfg.run.device = caller.run.out_dir, caller.run.quiet, caller.run.device
    cfg = resolve(copy.deepcopy(cfg))
    device = dist.init(cfg.run.device)
    reset_peak_memory(device)  # this run's peak, not that of an earlier run in the same process
    git_commit()  # the commit the report will name: the code as it is now, when this process runs it
    local_batch_size(cfg.optim.batch_size)  # the global batch must split evenly: fail before any output
    if cfg.run.deterministic:
        torch.use_deterministic_algorithms(True)
    seed_everything(cfg.run.seed)

    run_dir = _prepare_run_dir(cfg, resume)
    log = RunLog(run_dir, quiet=cfg.run.quiet)
    train_set, eval_set = _load_data(cfg)

    method = build_method(cfg, train_set.channels).to(device)
    optimizer = build_optimizer(method.param_groups(), cfg.optim)
    loader = build_train_loader(train_set, cfg, method.num_views, device)
    step_fn = _wrap_for_training(method, cfg, device, log)
    knn = None
    if eval_set is not None:
        knn = KnnMonitor(train_set, eval_set, k=cfg.monitor.knn_k, t=cfg.monitor.knn_t, device=device,
                         image_size=cfg.data.image_size, channels_last=cfg.run.channels_last)

    start_epoch, step = 0, 0
    if resume:
        ckpt_io.load_model_state(method, saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        start_epoch, step = saved["epoch"], saved["step"]
        ckpt_io.set_rng_state(saved["rng"])
        if dist.is_main():  # drop records of the epoch the interruption cut short
            kept = [r for r in read_metrics(run_dir) if r.get("epoch", 0) < start_epoch]
            (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in kept))
        log.info(f"resuming {run_dir} at epoch {start_epoch + 1}/{cfg.optim.epochs} (step {step})")

    steps_per_epoch = len(loader)
    total_steps = cfg.optim.epochs * steps_per_epoch
    warmup_steps = round(cfg.optim.warmup_epochs * steps_per_epoch)
    peak_lr = scaled_lr(cfg.optim)
    if start_epoch == 0 and dist.is_main():
        log.info(f"run {run_dir}: {cfg.method}, {cfg.model.backbone} (width {cfg.model.width}), "
                 f"{len(train_set)} images, batch {cfg.optim.batch_size}, lr {peak_lr:.4g}, "
                 f"{cfg.optim.epochs} epochs x {steps_per_epoch} steps, device {device}, "
                 f"{type(loader).__name__}, {dist.world_size()} process(es)")

    result = RunResult(run_dir=run_dir, epochs_done=start_epoch)
    autocast = _autocast(cfg, device)
    record: dict = {}
    for epoch in range(start_epoch, cfg.optim.epochs):
        method.train()
        log.start_epoch(epoch, cfg.optim.epochs, steps_per_epoch)
        loss_sum = torch.zeros((), device=device)
        std_sum = torch.zeros((), device=device)
        n_steps, skipped = 0, []
        t_epoch = t_log = time.perf_counter()
        images_since_log = 0
        batches = loader.epoch(epoch)
        if hasattr(method, "stream"):  # section 5's variants see batches (and image indices) ahead of their steps
            batches = method.stream(batches)
        for batch in batches:
            skipped += batch["skipped"]
            if batch["views"] is None:
                continue
            lr = cosine_lr(step, total_steps, peak_lr, warmup_steps)
            set_lr(optimizer, lr)
            with autocast:
                out = step_fn(speed.to_memory_format(batch["views"], cfg.run.channels_last))
            optimizer.zero_grad(set_to_none=True)
            out["loss"].backward()
            optimizer.step()
            method.on_step_end(step, total_steps) if hasattr(method, "on_step_end") else None

            loss = out["loss"].detach()
            loss_sum += loss
            std_sum += collapse_std(out["z"])
            n_steps += 1
            step += 1
            images_since_log += batch["views"][0].shape[0] * dist.world_size()
            postfix = None
            if step % cfg.run.log_every == 0:
                loss_value = dist.all_reduce_mean(loss).item()
                if not math.isfinite(loss_value):
                    _diverged(log, epoch, step, loss_value, run_dir)
                now = time.perf_counter()
                ips = images_since_log / (now - t_log)
                t_log, images_since_log = now, 0
                log.write({"kind": "step", "epoch": epoch, "step": step, "loss": loss_value, "lr": lr,
                           "images_per_s": round(ips, 1)})
                postfix = {"loss": f"{loss_value:.4f}", "lr": f"{lr:.3g}", "img/s": f"{ips:.0f}"}
                if log.quiet:
                    log.info(f"epoch {epoch + 1} step {step} loss {loss_value:.4f} lr {lr:.4g} {ips:.0f} img/s")
            log.step(postfix)
        log.end_epoch()

        if n_steps == 0:
            raise RuntimeError(f"epoch {epoch + 1} had no usable batch: every image was unreadable")
        epoch_loss = dist.all_reduce_mean(loss_sum / n_steps).item()
        if not math.isfinite(epoch_loss):
            _diverged(log, epoch, step, epoch_loss, run_dir)
        std = dist.all_reduce_mean(std_sum / n_steps).item()
        dim = out["z"].shape[1]
        record = {"kind": "epoch", "epoch": epoch, "epochs_done": epoch + 1, "step": step, "loss": epoch_loss,
                  "z_std": std, "z_std_sqrt_d": normalised_std(std, dim), "lr": lr,
                  "epoch_seconds": round(time.perf_counter() - t_epoch, 2),
                  "images_per_s": round(n_steps * cfg.optim.batch_size / (time.perf_counter() - t_epoch), 1),
                  **peak_memory(device)}
        all_skipped = dist.all_gather_objects(skipped)  # collective: every rank calls it, skipped or not
        if all_skipped:
            record["skipped_images"] = len(all_skipped)
            log.warn(f"epoch {epoch + 1}: skipped {len(all_skipped)} unreadable image(s), e.g. {all_skipped[:3]}")
        is_last = epoch + 1 == cfg.optim.epochs
        if knn is not None and ((epoch + 1) % cfg.monitor.every == 0 or is_last):
            record.update(knn(method.backbone))
        log.write(record)
        log.info(_epoch_line(record, cfg))

        collapsed = is_collapsed(record["z_std_sqrt_d"], cfg.monitor.collapse_threshold)
        if collapsed:
            log.warn(f"representation collapsing: std(z/|z|) x sqrt(d) = {record['z_std_sqrt_d']:.3f} is under "
                     f"monitor.collapse_threshold={cfg.monitor.collapse_threshold} (healthy is about 1)")
        if dist.is_main():
            ckpt_io.save_atomic(ckpt_io.make_checkpoint(model=method, optimizer=optimizer, epoch=epoch + 1, step=step,
                                                        config=cfg.to_dict()), run_dir / "checkpoint.pt")
        dist.barrier()
        result.epochs_done = epoch + 1
        if collapsed and cfg.monitor.stop_on_collapse:
            result.stopped_early = "collapse"
            log.warn("stopping: monitor.stop_on_collapse is set")
            break

    result.final = record or _last_epoch_record(run_dir)
    if dist.is_main():
        from .report import write_outputs

        write_outputs(run_dir, cfg, result)
    return result


def _epoch_line(r: dict, cfg: Config) -> str:
    knn = f"  kNN {r['knn_acc']:.2f}%" if "knn_acc" in r else ""
    return (f"epoch {r['epochs_done']}/{cfg.optim.epochs}  loss {r['loss']:.4f}  std*sqrt(d) {r['z_std_sqrt_d']:.3f}"
            f"{knn}  {r['images_per_s']:.0f} img/s  {r['epoch_seconds']:.0f}s")


def _last_epoch_record(run_dir: Path) -> dict:
    epochs = [r for r in read_metrics(run_dir) if r.get("kind") == "epoch"]
    return epochs[-1] if epochs else {}


def _diverged(log: RunLog, epoch: int, step: int, value: float, run_dir: Path):
    log.write({"kind": "diverged", "epoch": epoch, "step": step, "loss": value})
    raise TrainingDiverged(
        f"the loss became {value} at step {step} (epoch {epoch + 1}); training stopped. The last good "
        f"checkpoint in {run_dir} is intact -- lower optim.base_lr or add optim.warmup_epochs, then start anew "
        "(resuming would replay the same steps)")
