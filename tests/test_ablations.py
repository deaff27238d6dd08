"""Each ablation switch of sections 4-5 changes the computation as the paper specifies.

Already covered elsewhere (not repeated): the cross-entropy D against numpy (test_losses), BN
placement per ``model.head_bn`` (test_models), the lr rule, warmup and constant predictor lr
(test_optim).
"""
import copy

import pytest
import torch

from simsiam import get_preset, resolve
from simsiam.config import ConfigError, apply_overrides
from simsiam.data.loaders import BatchedViewLoader, PerImageViewLoader
from simsiam.methods import build_method
from simsiam.methods.ema_targets import moving_average
from simsiam.optim import build_optimizer


def _model(*overrides: str, seed: int = 0):
    cfg = resolve(apply_overrides(get_preset("digits"), list(overrides)))
    torch.manual_seed(seed)
    return build_method(cfg, in_channels=1), cfg


def _views(n: int, batch: int = 8, seed: int = 0, grad: bool = False):
    g = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(batch, 1, 8, 8, generator=g).requires_grad_(grad) for _ in range(n))


def _views_reaching_gradient(model, views) -> list[int]:
    model.training_step(views)["loss"].backward()
    return [i for i, v in enumerate(views) if v.grad is not None and v.grad.abs().sum() > 0]


@pytest.mark.parametrize("symmetry, stop_grad, expected", [
    ("symmetric", True, [0, 1]),  # each view is a prediction in one term
    ("asymmetric", True, [0]),  # D(p1, sg(z2)): view 2 is only ever a target
    ("asymmetric", False, [0, 1]),  # no stop-gradient: the target branch gets gradient too
    ("asymmetric2x", True, [0, 2]),  # two independent pairs: views 1 and 3 predict, 2 and 4 are targets
])
def test_symmetry_and_stop_grad_decide_which_views_get_gradient(symmetry, stop_grad, expected):
    model, _ = _model(f"loss.symmetry={symmetry}", f"loss.stop_grad={stop_grad}")
    assert model.num_views == (4 if symmetry == "asymmetric2x" else 2)
    assert _views_reaching_gradient(model, _views(model.num_views, grad=True)) == expected


def test_batched_loader_draws_four_views_for_asymmetric2x():
    from simsiam.data import load_dataset

    cfg = resolve(apply_overrides(get_preset("digits"), ["loss.symmetry=asymmetric2x"]))
    model = build_method(cfg, 1)
    loader = BatchedViewLoader(load_dataset("digits", "train"), cfg, model.num_views, torch.device("cpu"))
    views = next(iter(loader.epoch(0)))["views"]
    assert len(views) == 4 and not torch.equal(views[0], views[2])


def _train(model, cfg, batches, lr_scale: float = 1.0):
    opt = build_optimizer(model.param_groups(), cfg.optim)
    for group in opt.param_groups:
        group["lr"] *= lr_scale
    stream = model.stream(batches) if hasattr(model, "stream") else batches
    for batch in stream:
        opt.zero_grad()
        model.training_step(batch["views"])["loss"].backward()
        opt.step()
        yield batch


def _batches(n: int, batch: int = 8, views: int = 2):
    return [{"views": _views(views, batch, seed=i), "index": torch.arange(i * batch, (i + 1) * batch)} for i in range(n)]


def test_frozen_predictor_never_changes_while_the_encoder_trains():
    model, cfg = _model("model.predictor=frozen")
    before = copy.deepcopy(model.state_dict())
    for _ in _train(model, cfg, _batches(3)):
        pass
    after = model.state_dict()
    pred = [k for k in after if k.startswith("predictor.") and after[k].is_floating_point()
            and "running" not in k]  # running BN statistics are not parameters
    assert pred and all(torch.equal(before[k], after[k]) for k in pred)
    assert not torch.equal(before["projector.0.weight"], after["projector.0.weight"])


def test_equal_width_predictor_when_pred_hidden_is_set():
    model, cfg = _model("model.dim=32", "model.pred_hidden=32")
    assert model.predictor[0].out_features == 32 and model.projector[-2].out_features == 32
    bottleneck, _ = _model("model.dim=32")
    assert bottleneck.predictor[0].out_features == 8  # d/4


# ---- section 5: k-step alternation -------------------------------------------------------------

def test_kstep_cache_is_refreshed_exactly_every_k_steps():
    model, cfg = _model("method=simsiam_kstep", "hypothesis.kstep=3")
    seen = [model.refreshes for _ in _train(model, cfg, _batches(8))]
    assert seen == [1, 1, 1, 2, 2, 2, 3, 3]  # blocks of 3; the epoch's last block is shorter


def test_kstep_targets_stay_those_of_the_blocks_first_weights():
    model, cfg = _model("method=simsiam_kstep", "hypothesis.kstep=3")
    batches = _batches(3)
    with torch.no_grad():  # z of the third batch's views with theta at the block's start
        expected = [model.encode(v) for v in batches[2]["views"]]
    for i, _ in enumerate(_train(model, cfg, batches)):
        if i == 1:  # two SGD steps happened since the cache was filled; the third batch's eta is left
            _, cached = model._cache[0]
            assert all(torch.allclose(c, e, atol=1e-6) for c, e in zip(cached, expected))
            with torch.no_grad():
                assert not torch.allclose(model.encode(batches[2]["views"][0]), expected[0], atol=1e-4)


def test_kstep_one_epoch_refreshes_once():
    model, cfg = _model("method=simsiam_kstep", "hypothesis.kstep=-1")
    assert [model.refreshes for _ in _train(model, cfg, _batches(5))] == [1] * 5


def test_kstep_with_k_1_is_simsiam_step_for_step():
    plain, cfg = _model(seed=3)
    kstep, kcfg = _model("method=simsiam_kstep", "hypothesis.kstep=1", seed=3)
    kstep.load_state_dict(plain.state_dict())
    for _ in zip(_train(plain, cfg, _batches(3)), _train(kstep, kcfg, _batches(3))):
        pass
    for (name, a), b in zip(plain.named_parameters(), kstep.parameters()):
        assert torch.allclose(a, b, atol=1e-6), name


def test_kstep_refuses_a_batch_it_did_not_see():
    model, _ = _model("method=simsiam_kstep", "hypothesis.kstep=2")
    with pytest.raises(RuntimeError, match="stream"):
        model.training_step(_views(2))


# ---- section 5: moving-average eta (memory bank) -----------------------------------------------

def test_moving_average_arithmetic():
    old = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    new = torch.tensor([[10.0, 20.0], [30.0, 40.0]])
    out = moving_average(old, new, 0.8, torch.tensor([True, False]))
    assert torch.allclose(out, torch.tensor([[0.8 * 1 + 0.2 * 10, 0.8 * 2 + 0.2 * 20], [30.0, 40.0]]))


def test_bank_holds_the_moving_average_of_each_images_projections():
    m = 0.8
    model, cfg = _model("method=simsiam_ema", f"hypothesis.ema_m={m}", "model.predictor=none")
    first, second = _batches(1)[0], _batches(1)[0]  # the same 8 images twice, with other views
    first["views"] = _views(2, 8, seed=11)

    def z_mean(batch):
        with torch.no_grad():  # train mode, as in the step; lr 0 keeps the weights fixed
            return (model.encode(batch["views"][0]) + model.encode(batch["views"][1])) / 2

    for _ in _train(model, cfg, [first], lr_scale=0.0):
        pass
    a = model.eta[first["index"]].clone()
    assert torch.allclose(a, z_mean(first), atol=1e-5)  # first visit: eta is z
    for _ in _train(model, cfg, [second], lr_scale=0.0):
        pass
    assert torch.allclose(model.eta[second["index"]], m * a + (1 - m) * z_mean(second), atol=1e-5)
    assert model.seen.sum() == 8 and len(model.eta) == 8


def test_ema_with_m_0_is_simsiam_without_predictor():
    plain, cfg = _model("model.predictor=none", seed=5)
    ema, ecfg = _model("method=simsiam_ema", "model.predictor=none", seed=5)
    ema.load_state_dict(plain.state_dict(), strict=False)
    batches = _batches(3)
    for batch in batches:  # visit every image once first, so that the second pass uses the bank
        batch["index"] = torch.arange(8)
    for _ in zip(_train(plain, cfg, batches), _train(ema, ecfg, batches)):
        pass
    for (name, a), b in zip(plain.named_parameters(), ema.parameters()):
        assert torch.allclose(a, b, atol=1e-6), name


def test_bank_is_saved_and_loaded_whatever_its_size():
    model, cfg = _model("method=simsiam_ema", "hypothesis.ema_m=0.8", "model.predictor=none")
    for _ in _train(model, cfg, _batches(2)):
        pass
    state = model.state_dict()
    assert state["eta"].shape == (16, cfg.model.dim)
    fresh, _ = _model("method=simsiam_ema", "hypothesis.ema_m=0.8", "model.predictor=none")
    fresh.load_state_dict(state)
    assert torch.equal(fresh.eta, model.eta) and torch.equal(fresh.seen, model.seen)


@pytest.mark.parametrize("overrides, message", [
    (["hypothesis.kstep=10"], "simsiam_kstep"),
    (["method=simsiam_kstep"], "hypothesis.kstep"),
    (["method=simsiam_kstep", "hypothesis.kstep=-2"], ">= 1"),
    (["hypothesis.ema_m=0.8"], "simsiam_ema"),
    (["method=simsiam_ema", "hypothesis.ema_m=1.0"], r"\[0, 1\)"),
])
def test_hypothesis_fields_without_their_method_are_refused(overrides, message):
    with pytest.raises(ConfigError, match=message):
        resolve(apply_overrides(get_preset("digits"), overrides))


# ---- image indices from both loaders -----------------------------------------------------------

@pytest.mark.parametrize("loader_cls", [BatchedViewLoader, PerImageViewLoader])
def test_loaders_yield_the_dataset_index_of_every_image(loader_cls):
    from simsiam.data import load_dataset
    from simsiam.data.subset import subset

    cfg = resolve(apply_overrides(get_preset("digits"), ["optim.batch_size=16", "data.num_workers=0"]))
    data = subset(load_dataset("digits", "train"), 64)
    loader = loader_cls(data, cfg, 2, torch.device("cpu"))
    batches = list(loader.epoch(0))
    index = torch.cat([b["index"] for b in batches])
    assert sorted(index.tolist()) == list(range(64))
    labels = torch.cat([b["labels"] for b in batches])
    assert torch.equal(labels, data.labels[index])
