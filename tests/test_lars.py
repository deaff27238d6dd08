"""LARS against hand computations and a naive reference written from the update rule."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from simsiam.optim.lars import LARS, build_lars, lars_param_groups, trust_ratio


def _param(values) -> nn.Parameter:
    return nn.Parameter(torch.tensor(values, dtype=torch.float64))


def test_trust_ratio_by_hand():
    # ||w|| = 5, ||g|| = 1: eta * 5 / (1 + 0.1 * 5) = 0.001 * 5 / 1.5
    w, g = torch.tensor([3.0, 4.0]), torch.tensor([0.6, 0.8])
    assert trust_ratio(w, g, eta=0.001, weight_decay=0.1).item() == pytest.approx(0.001 * 5 / 1.5)
    assert trust_ratio(w, g, eta=0.02, weight_decay=0.0).item() == pytest.approx(0.02 * 5 / 1.0)


@pytest.mark.parametrize("w, g", [([0.0, 0.0], [1.0, 2.0]), ([1.0, 2.0], [0.0, 0.0])])
def test_trust_ratio_is_one_when_a_norm_is_zero(w, g):
    assert trust_ratio(torch.tensor(w), torch.tensor(g), eta=0.001, weight_decay=0.1).item() == 1.0


def test_one_step_by_hand():
    w = _param([3.0, 4.0])
    opt = LARS([w], lr=2.0, momentum=0.9, weight_decay=0.1, eta=0.001)
    w.grad = torch.tensor([0.6, 0.8], dtype=torch.float64)
    opt.step()
    trust = 0.001 * 5 / (1 + 0.1 * 5)
    d = [trust * (0.6 + 0.1 * 3.0), trust * (0.8 + 0.1 * 4.0)]  # trust * (g + wd * w)
    assert w.detach().tolist() == pytest.approx([3.0 - 2.0 * d[0], 4.0 - 2.0 * d[1]], rel=1e-12)


def _naive_lars(ws, grads_per_step, lr, momentum, wd, eta, excluded):
    """The update rule written out with Python floats, one tensor at a time."""
    ws = [list(w) for w in ws]
    bufs = [[0.0] * len(w) for w in ws]
    for grads in grads_per_step:
        for i, (w, g) in enumerate(zip(ws, grads)):
            if excluded[i]:
                d = list(g)  # plain SGD: no trust ratio, no weight decay
            else:
                wn = math.sqrt(sum(x * x for x in w))
                gn = math.sqrt(sum(x * x for x in g))
                trust = eta * wn / (gn + wd * wn) if wn > 0 and gn > 0 else 1.0
                d = [trust * (gj + wd * wj) for gj, wj in zip(g, w)]
            bufs[i] = [momentum * b + dj for b, dj in zip(bufs[i], d)]
            ws[i] = [wj - lr * b for wj, b in zip(w, bufs[i])]
    return ws


def test_several_steps_match_the_naive_reference_with_excluded_group():
    gen = torch.Generator().manual_seed(0)
    matrix = _param(torch.randn(3, 2, generator=gen, dtype=torch.float64).tolist())
    bias = _param([0.0, 0.5, -0.2])
    groups = [{"params": [matrix], "lars_exclude": False}, {"params": [bias], "lars_exclude": True}]
    opt = LARS(groups, lr=0.7, momentum=0.9, weight_decay=0.05, eta=0.01)
    grads = [[torch.randn(3, 2, generator=gen, dtype=torch.float64), torch.randn(3, generator=gen, dtype=torch.float64)]
             for _ in range(4)]
    expected = _naive_lars([matrix.detach().flatten().tolist(), bias.detach().tolist()],
                           [[g[0].flatten().tolist(), g[1].tolist()] for g in grads],
                           lr=0.7, momentum=0.9, wd=0.05, eta=0.01, excluded=[False, True])
    for g_matrix, g_bias in grads:
        matrix.grad, bias.grad = g_matrix.clone(), g_bias.clone()
        opt.step()
    assert matrix.detach().flatten().tolist() == pytest.approx(expected[0], rel=1e-10)
    assert bias.detach().tolist() == pytest.approx(expected[1], rel=1e-10)


def test_excluded_params_get_plain_sgd_updates():
    gen = torch.Generator().manual_seed(1)
    start = torch.randn(5, generator=gen)
    a, b = nn.Parameter(start.clone()), nn.Parameter(start.clone())
    lars = LARS([{"params": [a], "lars_exclude": True}], lr=0.3, momentum=0.9, weight_decay=0.5)  # wd ignored
    sgd = torch.optim.SGD([b], lr=0.3, momentum=0.9, weight_decay=0.0)
    for _ in range(3):
        g = torch.randn(5, generator=gen)
        a.grad, b.grad = g.clone(), g.clone()
        lars.step()
        sgd.step()
    torch.testing.assert_close(a.detach(), b.detach())


def test_param_groups_split_by_ndim():
    net = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3), nn.Linear(3, 2, bias=False))
    net[2].weight.requires_grad_(False)  # frozen parameters are left out
    groups = lars_param_groups(net, lr=0.1)
    adapted = [g for g in groups if not g["lars_exclude"]]
    excluded = [g for g in groups if g["lars_exclude"]]
    assert [p.shape for p in adapted[0]["params"]] == [torch.Size([3, 4])]
    assert {id(p) for p in excluded[0]["params"]} == {id(net[0].bias), id(net[1].weight), id(net[1].bias)}
    assert all(g["lr"] == 0.1 for g in groups)
    assert build_lars(net, lr=0.1).param_groups[1]["lars_exclude"] is True


def test_invalid_hyper_parameters_are_rejected():
    with pytest.raises(ValueError, match="eta > 0"):
        LARS([_param([1.0])], lr=0.1, eta=0.0)
