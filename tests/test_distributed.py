"""DDP on CPU: two gloo processes behave as one process with the same global batch.

Each multi-process test runs in 2 workers (one thread each; started once, ``fixtures_gloo.py``) that
join a gloo group through the same environment variables torchrun sets, then call the package as a
torchrun run would. Workers
save what they computed with ``torch.save``; the test compares it with a single-process run.
"""
from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from fixtures_gloo import WORLD, join, spawn

from simsiam.artifacts import checkpoint as ckpt_io
from simsiam.config.presets import get_preset
from simsiam.methods import build_method
from simsiam.optim import build_optimizer
from simsiam.parallel import distributed as dist
from simsiam.resolve import resolve

pytestmark = pytest.mark.skipif(not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
                                reason="needs torch.distributed with gloo")


def _small_digits(tmp_path: Path, batch: int = 32):
    cfg = get_preset("digits")
    cfg.model.width, cfg.model.proj_hidden, cfg.model.dim = 4, 32, 32
    cfg.optim.batch_size = batch
    cfg.run.out_dir, cfg.run.quiet, cfg.run.device = str(tmp_path / "run"), True, "cpu"
    return resolve(cfg)


# ------------------------------------------------------------- (a) one step: 2 x B/2 == 1 x B
def _views(batch: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.randn(batch, 1, 8, 8, generator=g), torch.randn(batch, 1, 8, 8, generator=g)


def _one_step(cfg, views) -> dict:
    """Build (seed 0), wrap as training wraps, take one SGD step; the mean loss and the new state."""
    from simsiam.train.step import wrap_for_training

    torch.manual_seed(0)
    method = build_method(cfg, in_channels=1)
    optimizer = build_optimizer(method.param_groups(), cfg.optim)
    step_fn = wrap_for_training(method, cfg, torch.device("cpu"))
    out = step_fn(views)
    optimizer.zero_grad(set_to_none=True)
    out["loss"].backward()
    optimizer.step()
    loss = dist.all_reduce_mean(out["loss"].detach())
    return {"loss": loss, "state": {k: v.detach().clone() for k, v in method.state_dict().items()}}


def _step_worker(rank, port, cfg, out_dir):
    join(rank, port)
    half = cfg.optim.batch_size // WORLD
    mine = tuple(v[rank * half:(rank + 1) * half] for v in _views(cfg.optim.batch_size))
    results = {}
    for sync in (True, False):
        c = copy.deepcopy(cfg)
        c.run.sync_bn = sync
        results[sync] = _one_step(c, mine)
    if rank == 0:
        torch.save(results, Path(out_dir) / "step.pt")
    dist.cleanup()


def test_two_processes_with_sync_bn_take_the_same_step_as_one(tmp_path):
    cfg = _small_digits(tmp_path, batch=32)
    single = _one_step(cfg, _views(32))
    spawn(_step_worker, cfg, str(tmp_path))
    multi = torch.load(tmp_path / "step.pt", weights_only=True)

    synced = multi[True]
    assert torch.allclose(synced["loss"], single["loss"], atol=1e-6), (synced["loss"], single["loss"])
    assert synced["state"].keys() == single["state"].keys()
    for name, value in single["state"].items():  # weights, and BN running statistics too
        assert torch.allclose(synced["state"][name].float(), value.float(), atol=1e-5), name
    # Control: per-device BN normalises each half by its own statistics, so the step differs --
    # the comparison above does detect whether BN was synchronized.
    per_device = multi[False]
    assert not torch.allclose(per_device["loss"], single["loss"], atol=1e-5)


# --------------------------------------- the CPU SyncBN layer alone, in the cases the heads use
def _bn_cases() -> list[tuple[torch.nn.Module, torch.Tensor, torch.Tensor]]:
    """(a BN layer, an input batch of 8, an output gradient): BN1d without affine (projector output,
    Table 3c footnote), BN2d on channels_last input with a shifted mean, cumulative momentum."""
    g = torch.Generator().manual_seed(2)
    bn1 = torch.nn.BatchNorm1d(6, affine=False)
    bn2 = torch.nn.BatchNorm2d(5)
    bn3 = torch.nn.BatchNorm2d(3, momentum=None)
    with torch.no_grad():
        bn2.weight.copy_(torch.rand(5, generator=g) + 0.5)
        bn2.bias.copy_(torch.randn(5, generator=g))
    x2 = (torch.randn(8, 5, 4, 4, generator=g) * 2 + 30).contiguous(memory_format=torch.channels_last)
    return [(bn1, torch.randn(8, 6, generator=g), torch.randn(8, 6, generator=g)),
            (bn2, x2, torch.randn(8, 5, 4, 4, generator=g)),
            (bn3, torch.randn(8, 3, 2, 2, generator=g), torch.randn(8, 3, 2, 2, generator=g))]


def _bn_forward_backward(bn, x, dy) -> dict:
    x = x.clone().requires_grad_()
    y = bn.train()(x)
    y.backward(dy)
    grads = {n: p.grad.clone() for n, p in bn.named_parameters()}
    return {"y": y.detach(), "dx": x.grad, "grads": grads, "buffers": {n: b.clone() for n, b in bn.named_buffers()}}


def _bn_worker(rank, port, out_dir):
    join(rank, port)
    from simsiam.parallel.sync_bn import convert_sync_batchnorm

    results = []
    for bn, x, dy in _bn_cases():
        mine = slice(rank * 4, (rank + 1) * 4)
        results.append(_bn_forward_backward(convert_sync_batchnorm(bn, torch.device("cpu")), x[mine], dy[mine]))
    torch.save(results, Path(out_dir) / f"bn{rank}.pt")
    dist.cleanup()


def test_cpu_sync_batchnorm_over_two_halves_equals_batchnorm_over_the_whole(tmp_path):
    spawn(_bn_worker, str(tmp_path))
    halves = [torch.load(tmp_path / f"bn{r}.pt", weights_only=True) for r in range(WORLD)]
    for i, (bn, x, dy) in enumerate(_bn_cases()):
        whole = _bn_forward_backward(bn, x, dy)
        for key in ("y", "dx"):
            joined = torch.cat([halves[0][i][key], halves[1][i][key]])
            assert torch.allclose(joined, whole[key], atol=1e-5), (i, key)
        for name, grad in whole["grads"].items():  # local sums; DDP would average them
            assert torch.allclose(halves[0][i]["grads"][name] + halves[1][i]["grads"][name], grad, atol=1e-5)
        for name, buf in whole["buffers"].items():  # same running statistics on both ranks
            for r in range(WORLD):
                assert torch.allclose(halves[r][i]["buffers"][name].float(), buf.float(), atol=1e-5), (i, name)


# ------------------------------------------------------------------ (b) pretrain and resume
class _Interrupted(Exception):
    pass


def _pretrain_worker(rank, port, straight, resumed):
    """Three runs in one process group (spawning costs more than the runs): straight through;
    interrupted after epoch 1 as a killed job would be; resumed to the end."""
    join(rank, port)
    from simsiam.train import pretrain as train

    train.pretrain(straight)
    real_start = train.RunLog.start_epoch

    def start_or_stop(self, epoch, *args):  # raised on every rank, after epoch 1's checkpoint and barrier
        if epoch == 1:
            raise _Interrupted
        return real_start(self, epoch, *args)

    train.RunLog.start_epoch = start_or_stop
    try:
        train.pretrain(resumed)
    except _Interrupted:
        pass
    finally:
        train.RunLog.start_epoch = real_start
    if rank == 0:
        torch.save(ckpt_io.load(resumed.run.out_dir)["epoch"], Path(resumed.run.out_dir).parent / "interrupted_at.pt")
    train.pretrain(resumed, resume=True)
    dist.cleanup()


def _tiny_run(tmp_path: Path, name: str):
    cfg = get_preset("digits")
    cfg.model.width, cfg.model.proj_hidden, cfg.model.dim = 4, 32, 32
    cfg.data.train_limit, cfg.data.eval_limit = 512, 200  # 4 steps of the global batch 128
    cfg.optim.epochs = 2
    cfg.run.out_dir, cfg.run.quiet = str(tmp_path / name), True
    cfg.run.epoch_checkpoint_minutes = 0  # epoch 1's checkpoint is the one the interruption leaves
    cfg.run.device = "cpu"  # gloo processes, also on a machine with one GPU
    return cfg


def test_two_process_run_checkpoints_and_resume_equals_uninterrupted(tmp_path):
    straight, resumed = _tiny_run(tmp_path, "straight"), _tiny_run(tmp_path, "resumed")
    spawn(_pretrain_worker, straight, resumed)
    assert torch.load(tmp_path / "interrupted_at.pt", weights_only=True) == 1  # the interruption left epoch 1's checkpoint

    a, b = (ckpt_io.load(c.run.out_dir) for c in (straight, resumed))
    assert a["epoch"] == b["epoch"] == 2 and a["step"] == b["step"] == 8
    for k in a["model"]:
        assert torch.allclose(a["model"][k].float(), b["model"][k].float(), atol=1e-6), k
    run = Path(resumed.run.out_dir)
    epochs = [json.loads(line) for line in open(run / "metrics.jsonl") if '"kind": "epoch"' in line]
    assert [r["epochs_done"] for r in epochs] == [1, 2]  # one record per epoch: only rank 0 wrote
    straight_epochs = [json.loads(line) for line in open(Path(straight.run.out_dir) / "metrics.jsonl")
                       if '"kind": "epoch"' in line]
    for r, s in zip(epochs, straight_epochs):
        assert r["loss"] == pytest.approx(s["loss"], abs=1e-6) and r["knn_acc"] == pytest.approx(s["knn_acc"])
    assert (run / "report.md").is_file() and (run / "curves.png").is_file()
    assert not list(run.glob(".checkpoint.pt.*"))  # no temporary file of a second writer


# ------------------------------------------------------- (c) kNN with a bank gathered over ranks
def _knn_worker(rank, port, ckpt, out_dir):
    join(rank, port)
    from simsiam.eval.pretrained import knn_evaluate

    res = knn_evaluate(ckpt, ks=(20, 200), ts=(0.1,))
    model, _ = _load(ckpt)
    feats = _features(model)
    if rank == 0:
        torch.save({"res": res, "feats": feats}, Path(out_dir) / "knn.pt")
    dist.cleanup()


def _load(ckpt):
    from simsiam.eval.pretrained import load_pretrained

    return load_pretrained(ckpt)


def _features(model):
    from simsiam.data import load_dataset
    from simsiam.eval import eval_mode, extract_features

    with eval_mode(model.backbone):
        return extract_features(model.backbone, load_dataset("digits", "test"), device=torch.device("cpu"),
                                batch_size=64)


def test_knn_with_bank_gathered_over_two_processes_equals_one_process(tmp_path):
    cfg = _small_digits(tmp_path)
    torch.manual_seed(0)
    method = build_method(cfg, in_channels=1)
    with torch.no_grad():  # running statistics other than (0, 1), so eval-mode BN does something
        method.train()(torch.randn(64, 1, 8, 8) * 3 + 1)
    ckpt = ckpt_io.save_atomic(ckpt_io.make_checkpoint(model=method, optimizer=build_optimizer(
        method.param_groups(), cfg.optim), epoch=1, step=1, config=cfg.to_dict()), tmp_path / "c.pt")

    from simsiam.eval.pretrained import knn_evaluate

    single = knn_evaluate(ckpt, ks=(20, 200), ts=(0.1,))
    single_feats = _features(_load(ckpt)[0])
    spawn(_knn_worker, str(ckpt), str(tmp_path))
    multi = torch.load(tmp_path / "knn.pt", weights_only=True)

    f, y, kept, skipped = multi["feats"]
    assert kept == single_feats[2] and torch.equal(y, single_feats[1]) and skipped == []  # dataset order
    assert torch.allclose(f, single_feats[0], atol=1e-5)
    assert multi["res"]["bank_size"] == single["bank_size"] and multi["res"]["queries"] == single["queries"]
    for key, acc in single["accuracy"].items():
        assert multi["res"]["accuracy"][key] == pytest.approx(acc, abs=1e-9), key


# ------------------------------------------------------------- per-image path: DistributedSampler
def _sampler_worker(rank, port, cfg, out_dir):
    join(rank, port)
    from simsiam.data import load_dataset
    from simsiam.data.loaders import build_train_loader
    from simsiam.data.subset import subset

    loader = build_train_loader(subset(load_dataset("digits", "train"), 256), cfg, 2, torch.device("cpu"))
    seen = {e: [b["labels"] for b in loader.epoch(e)] for e in (0, 1)}
    torch.save({"len": len(loader), "seen": seen}, Path(out_dir) / f"sampler{rank}.pt")
    dist.cleanup()


def test_per_image_loader_splits_each_epoch_between_ranks(tmp_path):
    cfg = _small_digits(tmp_path, batch=64)
    cfg.data.pipeline, cfg.data.num_workers = "per_image", 0
    spawn(_sampler_worker, cfg, str(tmp_path))
    r0, r1 = (torch.load(tmp_path / f"sampler{r}.pt", weights_only=True) for r in range(WORLD))
    assert r0["len"] == r1["len"] == 4  # 256 images // global batch 64
    for e in (0, 1):
        assert len(r0["seen"][e]) == 4 and all(len(b) == 32 for b in r0["seen"][e] + r1["seen"][e])
    # Labels stand in for indices here: the two ranks see different images, and a new epoch reshuffles.
    assert not torch.equal(torch.cat(r0["seen"][0]), torch.cat(r1["seen"][0]))
    assert not torch.equal(torch.cat(r0["seen"][0]), torch.cat(r0["seen"][1]))


# ------------------------------------------------------------------------------ the clean errors
def test_global_batch_that_does_not_divide_by_the_world_fails_clearly(tmp_path, monkeypatch):
    from simsiam import pretrain
    from simsiam.data.loaders import local_batch_size

    monkeypatch.setattr(dist, "world_size", lambda: 3)
    with pytest.raises(ValueError, match=r"optim.batch_size=128 is the global batch .* multiple of 3"):
        local_batch_size(128)
    cfg = get_preset("digits")
    cfg.run.out_dir = str(tmp_path / "run")
    with pytest.raises(ValueError, match="global batch"):
        pretrain(cfg)
    assert not (tmp_path / "run").exists()  # failed before writing anything


@pytest.mark.skipif(shutil.which("torchrun") is None and not (Path(sys.executable).parent / "torchrun").exists(),
                    reason="torchrun not installed")
def test_torchrun_cli_trains_then_refuses_to_overwrite_on_every_rank(tmp_path):
    """The real entry point: `torchrun -m simsiam pretrain`; a second run into the same directory
    fails on both ranks with the message (it used to hang: only rank 0 raised)."""
    torchrun = str(Path(sys.executable).parent / "torchrun") if (Path(sys.executable).parent / "torchrun").exists() \
        else "torchrun"
    cmd = [torchrun, "--standalone", "--nproc-per-node", str(WORLD), "-m", "simsiam", "pretrain", "--preset", "digits",
           "--out-dir", str(tmp_path / "run"), "--epochs", "1", "--quiet", "--device", "cpu", "data.train_limit=256",
           "data.eval_limit=100", "model.width=4"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    first = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)
    assert first.returncode == 0, first.stderr[-3000:]
    assert first.stdout.count("done: 1 epochs") == 1  # printed by rank 0 only
    assert "2 process(es)" in first.stdout
    second = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)
    assert second.returncode != 0
    for rank in range(WORLD):
        assert f"rank {rank}: " in second.stderr and "already holds a run" in second.stderr


def test_single_process_commands_refuse_torchrun(monkeypatch, capsys):
    """A command that does not split its work would run whole in every process (and write the same
    files concurrently): under torchrun it stops with a message, once."""
    from simsiam.cli import TORCHRUN_COMMANDS, main

    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert main(["presets"]) == 2
    assert "runs in one process" in capsys.readouterr().err
    assert set(TORCHRUN_COMMANDS) == {"pretrain", "knn"}
