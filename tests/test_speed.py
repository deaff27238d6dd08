"""Speed options change speed only: channels_last, bf16 autocast, torch.compile's fallback, and the
per-image loader's persistent workers, which must leave every epoch's batches as they were."""
import copy
import math

import pytest
import torch
from torch import nn

from simsiam import get_preset, pretrain
from simsiam.config import apply_overrides
from simsiam.data import load_dataset
from simsiam.data.loaders import PerImageViewLoader
from simsiam.data.sampler import EpochSampler
from simsiam.data.subset import subset
from simsiam.methods import build_method
from simsiam.optim import build_optimizer
from simsiam.resolve import resolve
from simsiam.train import speed


def _colour_cfg():
    """A small 3-channel model, where channels_last really reorders memory (one channel does not)."""
    return resolve(apply_overrides(get_preset("digits"), [
        "model.backbone=resnet18_cifar", "model.width=8", "model.dim=32", "model.proj_hidden=32",
        "optim.batch_size=16"]))


def _step(cfg, views, channels_last: bool):
    torch.manual_seed(0)
    method = build_method(cfg, 3)
    optimizer = build_optimizer(method.param_groups(), cfg.optim)
    if channels_last:
        method.to(memory_format=torch.channels_last)
    views = speed.to_memory_format(views, channels_last)
    losses = []
    for _ in range(2):  # the second loss is taken after one SGD step on the first
        out = method.training_step(views)
        optimizer.zero_grad(set_to_none=True)
        out["loss"].backward()
        optimizer.step()
        losses.append(out["loss"].item())
    return losses, method.backbone.conv1.weight.grad


def test_channels_last_step_gives_the_default_format_loss():
    cfg = _colour_cfg()
    gen = torch.Generator().manual_seed(1)
    views = tuple(torch.randn(16, 3, 16, 16, generator=gen) for _ in range(2))
    default, grad_default = _step(cfg, views, channels_last=False)
    last, grad_last = _step(cfg, views, channels_last=True)
    assert default == pytest.approx(last, abs=1e-5)
    assert torch.allclose(grad_default, grad_last, atol=1e-5, rtol=1e-4)


def test_views_follow_the_model_into_channels_last():
    views = (torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4))
    converted = speed.to_memory_format(views, True)
    assert all(v.is_contiguous(memory_format=torch.channels_last) for v in converted)
    assert all(torch.equal(a, b) for a, b in zip(views, converted))
    assert speed.to_memory_format(views, False)[0] is views[0]  # untouched when the model is NCHW


def test_amp_choices():
    cpu = torch.device("cpu")
    assert speed.amp_dtype("off", cpu) is None
    assert speed.amp_dtype("bf16", cpu) is torch.bfloat16
    assert speed.amp_dtype("auto", cpu) is None  # the tests pin fp32 (conftest: SIMSIAM_CPU_AUTO_AMP=off)
    with pytest.raises(ValueError, match="run.amp"):
        speed.amp_dtype("fp8", cpu)


def test_bf16_autocast_on_cpu_trains_a_step_with_finite_loss():
    cfg = resolve(get_preset("digits"))
    torch.manual_seed(0)
    method = build_method(cfg, 1)
    optimizer = build_optimizer(method.param_groups(), cfg.optim)
    seen = []
    method.backbone.conv1.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    views = tuple(torch.randn(32, 1, 8, 8) for _ in range(2))
    with speed.autocast("bf16", torch.device("cpu")):
        out = method.training_step(views)
    out["loss"].backward()
    optimizer.step()
    assert seen and all(d == torch.bfloat16 for d in seen)  # autocast really ran the convs in bf16
    assert math.isfinite(out["loss"].item())
    assert all(p.grad is None or torch.isfinite(p.grad).all() for p in method.parameters())
    assert method.backbone.conv1.weight.dtype == torch.float32  # master weights stay fp32


# ------------------------------------------------------------------------ torch.compile fallback
def _failing_backend(gm, example_inputs):
    raise RuntimeError("no C compiler here (forced by the test)")


def test_compile_failure_falls_back_to_eager_with_one_message():
    torch.manual_seed(0)
    module = nn.Sequential(nn.Linear(4, 3), nn.ReLU())
    messages = []
    step = speed.compile_with_fallback(module, messages.append, backend=_failing_backend)
    x = torch.randn(5, 4)
    assert torch.equal(step(x), module(x))
    assert not step.is_compiled
    assert len(messages) == 1 and "torch.compile failed" in messages[0] and "eager" in messages[0]
    assert "no C compiler" in messages[0]
    step(x)
    assert len(messages) == 1  # said once, not every step


def test_compile_that_works_stays_compiled():
    module = nn.Linear(4, 3)
    messages = []
    step = speed.compile_with_fallback(module, messages.append, backend="eager")  # dynamo only, no C compiler
    x = torch.randn(5, 4)
    assert torch.allclose(step(x), module(x))
    assert step.is_compiled and messages == []


def test_pretrain_with_a_failing_compile_trains_eagerly(digits_cfg, monkeypatch, capsys):
    def broken_compile(module, **kwargs):
        def call(*args, **kw):
            raise RuntimeError("inductor exploded (forced by the test)")
        return call

    monkeypatch.setattr(torch, "compile", broken_compile)
    digits_cfg.run.compile = True
    digits_cfg.optim.epochs = 1
    digits_cfg.data.eval_split, digits_cfg.data.train_limit = "", 512
    result = pretrain(digits_cfg)
    assert result.epochs_done == 1 and math.isfinite(result.final["loss"])
    err = capsys.readouterr().err
    assert err.count("torch.compile failed") == 1 and "inductor exploded" in err


# ------------------------------------------------------------------ per-image loader determinism
def _per_image_loader(workers: int):
    cfg = resolve(apply_overrides(get_preset("digits"), ["optim.batch_size=16", f"data.num_workers={workers}",
                                                         "data.pipeline=per_image"]))
    return PerImageViewLoader(subset(load_dataset("digits", "train"), 48), cfg, 2, torch.device("cpu"))


def test_per_image_epoch_does_not_depend_on_workers_or_on_earlier_epochs():
    """Resume needs epoch e's batches to be a function of (seed, e): with persistent workers, and
    whatever ran before, and however many workers there are."""
    persistent = _per_image_loader(workers=1)
    assert persistent.loader.persistent_workers
    epoch0 = list(persistent.epoch(0))
    epoch1 = list(persistent.epoch(1))
    fresh = list(_per_image_loader(workers=0).epoch(1))  # as a resumed run starts at epoch 1
    assert len(epoch1) == len(fresh) == 3
    for a, b in zip(epoch1, fresh):
        assert torch.equal(a["index"], b["index"])
        assert all(torch.equal(x, y) for x, y in zip(a["views"], b["views"]))
    assert not torch.equal(epoch0[0]["views"][0], epoch1[0]["views"][0])  # a new epoch draws new views
    assert not torch.equal(epoch1[0]["views"][0], epoch1[0]["views"][1])  # the two views differ


def test_per_image_loader_leaves_the_global_rng_alone():
    loader = _per_image_loader(workers=0)
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    list(loader.epoch(0))
    assert torch.equal(torch.rand(3), expected)


def test_epoch_sampler_splits_each_global_batch_between_ranks():
    single = EpochSampler(40, 8, rank=0, world=1, seed=0)
    ranks = [EpochSampler(40, 8, rank=r, world=2, seed=0) for r in range(2)]
    for s in (single, *ranks):
        s.set_epoch(3)
    whole = list(single)
    parts = [list(s) for s in ranks]
    assert len(whole) == 40 and all(len(p) == 20 for p in parts)
    for b in range(5):  # global batch b is rank 0's 4 items, then rank 1's
        assert whole[8 * b: 8 * b + 8] == parts[0][4 * b: 4 * b + 4] + parts[1][4 * b: 4 * b + 4]
    assert sorted(i for _, i in whole) == list(range(40))
    again = copy.deepcopy(single)
    again.set_epoch(4)
    assert list(again) != whole


@pytest.mark.parametrize("native, pinned, expected", [(True, False, "bf16"), (False, False, "off"),
                                                      (True, True, "off")])
def test_amp_auto_picks_bf16_on_cpus_with_native_bf16_only(monkeypatch, native, pinned, expected):
    monkeypatch.setattr(speed, "cpu_bf16_is_native", lambda: native)
    monkeypatch.setenv("SIMSIAM_CPU_AUTO_AMP", "off" if pinned else "")
    chosen, why = speed.resolve_amp("auto", torch.device("cpu"))
    assert chosen == expected and why.startswith("run.amp=auto")
    assert ("native bf16 (" in why) == (expected == "bf16")
    assert speed.resolve_amp("off", torch.device("cpu")) == ("off", "run.amp=off")
