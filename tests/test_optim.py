import math

import pytest

from simsiam import get_preset, resolve
from simsiam.methods import build_method
from simsiam.optim import build_optimizer, cosine_lr, scaled_lr, set_lr


def test_linear_scaling_rule():
    cfg = get_preset("cifar10")
    assert scaled_lr(cfg.optim) == pytest.approx(0.03 * 512 / 256)


def test_cosine_values():
    assert cosine_lr(0, 100, 1.0) == pytest.approx(1.0)
    assert cosine_lr(50, 100, 1.0) == pytest.approx(0.5)
    assert cosine_lr(25, 100, 1.0) == pytest.approx(0.5 * (1 + math.cos(math.pi / 4)))
    assert cosine_lr(100, 100, 1.0) == pytest.approx(0.0, abs=1e-12)


def test_warmup_then_cosine():
    assert cosine_lr(0, 110, 1.0, warmup_steps=10) == pytest.approx(0.1)
    assert cosine_lr(9, 110, 1.0, warmup_steps=10) == pytest.approx(1.0)
    assert cosine_lr(10, 110, 1.0, warmup_steps=10) == pytest.approx(1.0)
    assert cosine_lr(60, 110, 1.0, warmup_steps=10) == pytest.approx(0.5)


@pytest.mark.parametrize("fix_pred_lr", [True, False])
def test_predictor_lr_constant_only_when_fixed(fix_pred_lr):
    cfg = resolve(get_preset("digits"))
    cfg.optim.fix_pred_lr = fix_pred_lr
    model = build_method(cfg, 1)
    opt = build_optimizer(model.param_groups(), cfg.optim)
    peak = scaled_lr(cfg.optim)
    set_lr(opt, cosine_lr(90, 100, peak))
    lrs = {g["name"]: g["lr"] for g in opt.param_groups}
    assert lrs["encoder"] == pytest.approx(cosine_lr(90, 100, peak))
    assert lrs["predictor"] == pytest.approx(peak if fix_pred_lr else cosine_lr(90, 100, peak))


def test_weight_decay_on_every_parameter_including_bn():
    cfg = resolve(get_preset("digits"))
    model = build_method(cfg, 1)
    opt = build_optimizer(model.param_groups(), cfg.optim)
    assert all(g["weight_decay"] == cfg.optim.weight_decay for g in opt.param_groups)
    n_opt = sum(p.numel() for g in opt.param_groups for p in g["params"])
    assert n_opt == sum(p.numel() for p in model.parameters())
    assert all(g["momentum"] == 0.9 for g in opt.param_groups)
