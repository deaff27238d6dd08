"""Section 6's methods (SimCLR, MoCo v2, BYOL, SwAV): losses against naive references written from
their papers' formulas, momentum and queue arithmetic, gradient flow, DDP negatives, and one real
pretraining run of each with a checkpoint round trip."""
from __future__ import annotations

import copy
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from fixtures_gloo import join, spawn

from simsiam import get_preset, pretrain
from simsiam.artifacts import checkpoint as ckpt_io
from simsiam.config import ConfigError, apply_overrides
from simsiam.config.presets_methods import small_overrides
from simsiam.methods import build_method
from simsiam.methods.byol import normalized_mse
from simsiam.methods.moco import moco_infonce
from simsiam.methods.momentum import cosine_momentum, ema_update
from simsiam.methods.queue import FeatureQueue
from simsiam.methods.simclr import nt_xent
from simsiam.methods.swav import sinkhorn, swapped_prediction
from simsiam.parallel import distributed as dist
from simsiam.resolve import resolve

METHODS = ("simclr", "moco", "byol", "swav")


def _rand(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _cos(a, b):
    return float(a @ b / (a.norm() * b.norm()))


def _tiny(method: str, *extra: str):
    """digits with the method's small-scale recipe, shrunk to run in a second."""
    cfg = apply_overrides(get_preset("digits"), small_overrides(method) + [
        "model.width=4", "model.proj_hidden=32", "model.dim=16", "model.pred_hidden=8",
        "methods.moco_queue=64", "methods.swav_prototypes=10", "run.device=cpu", *extra])
    return resolve(cfg)


# ------------------------------------------------------------------ losses vs naive references
def _nt_xent_loop(q, k, t, offset=0):
    """l(i, j) = -log exp(sim(q_i, k_j)/t) / sum_{m != i} exp(sim(q_i, k_m)/t), j = i's other view."""
    two_n = q.shape[0]
    total = 0.0
    for i in range(two_n):
        j = offset + (i + two_n // 2) % two_n
        den = sum(math.exp(_cos(q[i], k[m]) / t) for m in range(k.shape[0]) if m != offset + i)
        total += -math.log(math.exp(_cos(q[i], k[j]) / t) / den)
    return total / two_n


def test_nt_xent_matches_the_formula_over_2n_views():
    z = _rand(10, 6)  # [view 1 of 5 images; view 2 of the same 5]
    assert nt_xent(z, z, 0.3).item() == pytest.approx(_nt_xent_loop(z, z, 0.3), rel=1e-5)
    # Section 6.2's form: queries h(z) differ from the keys z.
    q = _rand(10, 6, seed=1)
    assert nt_xent(q, z, 0.5).item() == pytest.approx(_nt_xent_loop(q, z, 0.5), rel=1e-5)
    # This process's views inside a larger (gathered) key set, at an offset.
    keys = torch.cat([_rand(4, 6, seed=2), z, _rand(6, 6, seed=3)])
    assert nt_xent(z, keys, 0.2, offset=4).item() == pytest.approx(_nt_xent_loop(z, keys, 0.2, offset=4), rel=1e-5)


def test_moco_infonce_matches_the_formula():
    q, k, queue = _rand(4, 5), _rand(4, 5, seed=1), F.normalize(_rand(7, 5, seed=2), dim=1)
    t = 0.2
    ref = 0.0
    for i in range(4):
        pos = math.exp(_cos(q[i], k[i]) / t)
        ref += -math.log(pos / (pos + sum(math.exp(_cos(q[i], n) / t) for n in queue)))
    assert moco_infonce(q, k, queue, t).item() == pytest.approx(ref / 4, rel=1e-5)


def test_byol_loss_is_the_squared_distance_of_unit_vectors():
    p, z = _rand(5, 4), _rand(5, 4, seed=1)
    ref = sum(float(((p[i] / p[i].norm() - z[i] / z[i].norm()) ** 2).sum()) for i in range(5)) / 5
    assert normalized_mse(p, z).item() == pytest.approx(ref, rel=1e-6)
    assert normalized_mse(p, 3 * p).item() == pytest.approx(0.0, abs=1e-6)


def test_sinkhorn_codes_are_an_equipartition():
    scores = F.normalize(_rand(64, 8), dim=1) @ F.normalize(_rand(16, 8, seed=1), dim=1).T  # (B, K) cosines
    def imbalance(codes):  # the largest relative deviation of a prototype's share of the batch from 1/K
        return float((codes.double().sum(dim=0) / 64 * 16 - 1).abs().max())

    deviations = []
    for iters in (1, 3, 10, 200):
        codes = sinkhorn(scores, eps=0.05, iters=iters)
        assert torch.allclose(codes.sum(dim=1), torch.ones(64), atol=1e-5)  # each image: a distribution
        deviations.append(imbalance(codes))
    # Each iteration moves the prototype marginals toward uniform (SwAV's 3 only part of the way:
    # from about 108% off for a plain softmax to under 90% here); many iterations reach it.
    assert deviations == sorted(deviations, reverse=True)
    assert deviations[1] < imbalance(F.softmax(scores / 0.05, dim=1)) and deviations[-1] < 1e-4
    # The codes stay close to the assignment the scores suggest (eps small): mostly one-hot-like.
    assert (codes.argmax(dim=1) == scores.argmax(dim=1)).float().mean() > 0.5


def test_swapped_prediction_matches_the_formula():
    s1, s2 = _rand(3, 4), _rand(3, 4, seed=1)
    q1, q2 = F.softmax(_rand(3, 4, seed=2), dim=1), F.softmax(_rand(3, 4, seed=3), dim=1)
    t = 0.1
    ref = 0.0
    for i in range(3):
        p1 = [math.exp(s1[i, k] / t) / sum(math.exp(s1[i, m] / t) for m in range(4)) for k in range(4)]
        p2 = [math.exp(s2[i, k] / t) / sum(math.exp(s2[i, m] / t) for m in range(4)) for k in range(4)]
        ref += -0.5 * sum(q2[i, k] * math.log(p1[k]) + q1[i, k] * math.log(p2[k]) for k in range(4))
    assert swapped_prediction(s1, s2, q1, q2, t).item() == pytest.approx(float(ref) / 3, rel=1e-5)


# ------------------------------------------------------------------ momentum and queue arithmetic
def test_ema_update_and_byol_cosine_schedule():
    online, target = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
    before = [p.detach().clone() for p in target.parameters()]
    ema_update(target, online, 0.9)
    for t, b, o in zip(target.parameters(), before, online.parameters()):
        assert torch.allclose(t, 0.9 * b + 0.1 * o)
    assert cosine_momentum(0, 100, 0.99) == pytest.approx(0.99)
    assert cosine_momentum(50, 100, 0.99) == pytest.approx(0.995)
    assert cosine_momentum(100, 100, 0.99) == pytest.approx(1.0)
    assert cosine_momentum(25, 100, 0.99) == pytest.approx(1 - 0.01 * (math.cos(math.pi / 4) + 1) / 2)


@pytest.mark.parametrize("method", ["moco", "byol"])
def test_on_step_end_moves_the_target_by_the_momentum_rule(method):
    torch.manual_seed(0)
    model = build_method(_tiny(method), in_channels=1)
    with torch.no_grad():
        for p in model.backbone.parameters():
            p.add_(torch.randn_like(p))  # online != target
    old = [p.clone() for p in model.momentum_backbone.parameters()]
    model.on_step_end(step=30, total_steps=100)
    m = 0.99 if method == "moco" else cosine_momentum(30, 100, 0.99)
    for t, o, p in zip(model.momentum_backbone.parameters(), old, model.backbone.parameters()):
        assert torch.allclose(t, m * o + (1 - m) * p, atol=1e-6)


def test_queue_is_first_in_first_out_and_wraps():
    q = FeatureQueue(size=5, dim=1)
    batches = [torch.tensor([[1.0], [2.0]]), torch.tensor([[3.0], [4.0]]), torch.tensor([[5.0], [6.0]])]
    for b in batches:
        q.enqueue(b)
    # 1 and 2 went in first; 6 overwrote the oldest (1) when the ring wrapped.
    assert q.features.flatten().tolist() == [6.0, 2.0, 3.0, 4.0, 5.0]
    assert int(q.ptr) == 1 and q.is_full()
    q.enqueue(torch.arange(10.0, 17.0)[:, None])  # more than the queue holds: the newest 5 stay
    assert sorted(q.features.flatten().tolist()) == [12.0, 13.0, 14.0, 15.0, 16.0]
    q.clip(3)
    assert q.active().shape == (3, 1) and 0 <= int(q.ptr) < 3


def test_moco_enqueues_this_steps_keys_and_clips_a_queue_longer_than_the_data(capsys):
    torch.manual_seed(0)
    model = build_method(_tiny("moco"), in_channels=1).train()
    views = (torch.randn(8, 1, 8, 8), torch.randn(8, 1, 8, 8))
    model.training_step(views)
    keys = torch.cat([model.encode_keys(views[0]), model.encode_keys(views[1])])  # train-mode BN: same values
    assert torch.allclose(model.queue.features[:16], keys, atol=1e-5) and int(model.queue.ptr) == 16
    model.on_step_end(0, total_steps=3 * 2)  # 3 epochs x 2 steps of batch 128: 256 images an epoch
    assert int(model.queue.length) == 64  # 64 <= 256: left alone
    big = build_method(_tiny("moco", "methods.moco_queue=1000"), in_channels=1)
    big.on_step_end(0, total_steps=3 * 2)
    assert int(big.queue.length) == 256 and "longer than the 256 training images" in capsys.readouterr().err


# ------------------------------------------------------------------ gradient flow
@pytest.mark.parametrize("method", METHODS)
def test_targets_get_no_gradient_and_every_trainable_parameter_does(method):
    torch.manual_seed(0)
    model = build_method(_tiny(method), in_channels=1).train()
    out = model.training_step((torch.randn(8, 1, 8, 8), torch.randn(8, 1, 8, 8)))
    out["loss"].backward()
    assert torch.isfinite(out["loss"]) and not out["z"].requires_grad
    for name, p in model.named_parameters():
        if name.startswith("momentum_"):
            assert not p.requires_grad and p.grad is None, name
        else:
            assert p.grad is not None and torch.isfinite(p.grad).all(), name
    for name, b in model.named_buffers():
        assert not b.requires_grad, name
    groups = model.param_groups()
    in_groups = {id(p) for g in groups for p in g["params"]}
    assert in_groups == {id(p) for p in model.parameters() if p.requires_grad}


def test_swav_targets_are_constants_unless_the_ablation_removes_the_stop_gradient():
    for stop_grad in (True, False):
        model = build_method(_tiny("swav", f"methods.stop_grad={stop_grad}"), in_channels=1)
        scores = torch.randn(8, 10, requires_grad=True)
        codes = model._codes(scores, 0, F.normalize(model.prototypes.weight, dim=1))
        assert codes.requires_grad is (not stop_grad)


def test_swav_prototypes_frozen_for_the_first_epoch_get_a_zero_gradient():
    model = build_method(_tiny("swav", "methods.swav_freeze_prototypes_epochs=1"), in_channels=1).train()
    views = (torch.randn(8, 1, 8, 8), torch.randn(8, 1, 8, 8))
    model.training_step(views)["loss"].backward()
    assert model.prototypes.weight.grad.abs().max() == 0  # step 0: frozen
    model.on_step_end(step=0, total_steps=3 * 2)  # 2 steps an epoch: frozen until 2 steps are done
    model.on_step_end(step=1, total_steps=3 * 2)
    model.zero_grad()
    model.training_step(views)["loss"].backward()
    assert model.prototypes.weight.grad.abs().max() > 0


def test_byol_with_momentum_zero_has_no_momentum_encoder():
    model = build_method(_tiny("byol", "methods.momentum=0"), in_channels=1)
    assert model.momentum_backbone is None and not any(n.startswith("momentum_") for n, _ in model.named_parameters())
    with pytest.raises(ConfigError, match="needs methods.momentum=0"):
        _tiny("byol", "methods.stop_grad=false")
    _tiny("byol", "methods.momentum=0", "methods.stop_grad=false")  # the no-stop-grad, no-momentum ablation


def test_section_6_switches_are_refused_where_they_would_be_ignored():
    with pytest.raises(ConfigError, match="SimCLR/SwAV cross-ablation"):
        resolve(apply_overrides(get_preset("digits"), ["methods.predictor=true"]))
    with pytest.raises(ConfigError, match="read only by method"):
        resolve(apply_overrides(get_preset("digits"), ["methods.temperature=0.1"]))
    with pytest.raises(ConfigError, match="read only by method"):
        _tiny("moco", "methods.stop_grad=false")


# ------------------------------------------------------------------ DDP: gathered negatives
def _global_views():
    return _rand(8, 6, seed=5).float(), _rand(8, 6, seed=6).float()  # 8 images, 2 views


def _simclr_worker(rank, port, out_dir):
    join(rank, port)
    v1, v2 = _global_views()
    mine = slice(rank * 4, rank * 4 + 4)
    queries = torch.cat([v1[mine], v2[mine]]).requires_grad_()  # this process's 4 images
    keys = dist.gather_with_grad(queries)  # (16, 6): [rank 0's views; rank 1's views]
    loss = nt_xent(queries, keys, 0.2, offset=rank * 8)
    loss.backward()
    images = _image_views()
    step = _simclr_step(tuple(v[rank * 8:(rank + 1) * 8] for v in images))  # DDP + SyncBN, as training wraps it
    torch.save({"loss": loss.detach(), "grad": queries.grad, "step": step}, Path(out_dir) / f"simclr{rank}.pt")
    dist.cleanup()


def _image_views():
    g = torch.Generator().manual_seed(7)
    return torch.randn(16, 1, 8, 8, generator=g), torch.randn(16, 1, 8, 8, generator=g)


def _simclr_step(views) -> dict:
    """One SGD step of SimCLR wrapped as pretraining wraps it; the mean loss and the new weights."""
    from simsiam.optim import build_optimizer
    from simsiam.train.step import wrap_for_training

    cfg = _tiny("simclr", "optim.batch_size=16", "run.channels_last=false")
    torch.manual_seed(0)
    method = build_method(cfg, in_channels=1)
    optimizer = build_optimizer(method.param_groups(), cfg.optim)
    step_fn = wrap_for_training(method, cfg, torch.device("cpu"))  # kept: DDP reduces in backward
    out = step_fn(views)
    optimizer.zero_grad(set_to_none=True)
    out["loss"].backward()
    optimizer.step()
    return {"loss": dist.all_reduce_mean(out["loss"].detach()),
            "state": {k: v.detach().clone() for k, v in method.state_dict().items()}}


@pytest.mark.skipif(not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
                    reason="needs torch.distributed with gloo")
def test_simclr_negatives_gathered_over_two_processes_equal_one_process(tmp_path):
    spawn(_simclr_worker, str(tmp_path))
    ranks = [torch.load(tmp_path / f"simclr{r}.pt", weights_only=True) for r in range(2)]
    v1, v2 = _global_views()
    z = torch.cat([v1, v2]).requires_grad_()
    single = nt_xent(z, z, 0.2)
    single.backward()
    assert torch.allclose((ranks[0]["loss"] + ranks[1]["loss"]) / 2, single, atol=1e-6)
    # DDP averages the processes' gradients; each process's rows got the gradient of every process's
    # loss through the gather, so the average equals one process's gradient of the mean loss.
    g1, g2 = z.grad[:8], z.grad[8:]
    for r in range(2):
        mine = slice(r * 4, r * 4 + 4)
        assert torch.allclose(ranks[r]["grad"] / 2, torch.cat([g1[mine], g2[mine]]), atol=1e-6), r
    # The whole training step: 2 processes x 8 images (SyncBN, DDP) == 1 process x 16 images.
    single_step, multi_step = _simclr_step(_image_views()), ranks[0]["step"]
    assert torch.allclose(multi_step["loss"], single_step["loss"], atol=1e-5)
    for name, value in single_step["state"].items():
        assert torch.allclose(multi_step["state"][name].float(), value.float(), atol=1e-5), name


# ------------------------------------------------------------------ a real run of every method
@pytest.mark.parametrize("method", METHODS)
def test_pretrain_runs_every_method_and_its_checkpoint_keeps_the_targets_and_queues(method, tmp_path):
    # 4 steps of 64 images; MoCo: 128 keys a step into a queue of 200; SwAV: a queue of 128 per view.
    cfg = _tiny(method, "optim.epochs=1", "optim.batch_size=64", "data.train_limit=256", "data.eval_split=",
                "methods.moco_queue=200", f"run.out_dir={tmp_path / method}", "run.quiet=true",
                *(["methods.swav_queue=128"] if method == "swav" else []))
    result = pretrain(cfg)
    assert math.isfinite(result.final["loss"]) and result.final["peak_rss_mb"] > 0
    saved = ckpt_io.load(result.run_dir / "checkpoint.pt")
    state = saved["model"]
    fresh = build_method(resolve(copy.deepcopy(cfg)), in_channels=1)
    ckpt_io.load_model_state(fresh, state)
    for name, value in fresh.state_dict().items():
        assert torch.equal(value, state[name]), name
    if method in ("moco", "byol"):  # the momentum encoder moved, and is not the online one
        assert any(not torch.equal(state[f"momentum_{k}"], v) for k, v in state.items() if k.startswith("backbone."))
    if method == "moco":
        assert int(state["queue.count"]) == 4 * 128 and int(state["queue.ptr"]) == 4 * 128 % 200
    if method == "swav":
        assert int(state["queues.0.count"]) == 4 * 64 and int(state["steps_done"]) == 4


# ------------------------------------------------------------------ presets and section-6 tables
def test_method_presets_and_every_section_6_table_row_resolve():
    from simsiam.config.presets import PRESETS
    from simsiam.reproduce.methods_tables import TABLES

    for name in ("simclr", "moco_v2", "byol", "swav", "fmnist_simclr", "fmnist_moco", "fmnist_byol", "fmnist_swav"):
        cfg = resolve(PRESETS[name]())
        assert cfg.preset == name and cfg.method in METHODS
        if name.startswith("fmnist"):  # the CPU presets share the fmnist budget
            assert cfg.optim.batch_size == PRESETS["fmnist"]().optim.batch_size
        else:
            assert cfg.optim.batch_size == (256 if "moco" in name else 4096)
    assert resolve(PRESETS["moco_v2"]()).methods.momentum == 0.999
    assert resolve(PRESETS["simclr"]()).optim.optimizer == "lars"
    for table, rows in TABLES.items():
        assert rows and len({r["name"] for r in rows}) == len(rows), table
        for r in rows:
            assert set(r) >= {"name", "overrides", "paper", "claim"}
            for preset in ("digits", "fmnist"):
                resolve(apply_overrides(get_preset(preset), r["overrides"]))


def test_lars_recipes_build_lars_with_the_predictor_group_still_at_a_fixed_lr():
    from simsiam.optim import build_optimizer, set_lr
    from simsiam.optim.lars import LARS

    cfg = _tiny("simclr", "methods.predictor=true", "optim.optimizer=lars")
    model = build_method(cfg, in_channels=1)
    opt = build_optimizer(model.param_groups(), cfg.optim)
    assert isinstance(opt, LARS)
    # Each group split in two: matrices adapted, 1-D tensors (biases, BN) plain SGD.
    assert sorted((g["name"], g["lars_exclude"]) for g in opt.param_groups) == [
        ("encoder", False), ("encoder", True), ("predictor", False), ("predictor", True)]
    set_lr(opt, 0.0)
    assert all((g["lr"] == 0.0) != g["fix_lr"] for g in opt.param_groups)
