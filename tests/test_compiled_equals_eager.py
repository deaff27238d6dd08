"""``torch.compile`` changes speed, not results: the compiled step trains the digits model along the
same loss curve as the eager one, to float rounding (issue 29's check).

Inductor is really run here (its C++ code built with the machine's compiler). Compiling the digits
preset's ResNet-18 forward and backward takes minutes of CPU, so the backbone is a two-convolution
one with the same kinds of layers (convolution, training-mode batch norm, ReLU, pooling) under the
preset's heads, loss and SGD: a few fp32 steps, compiled in seconds. Where inductor cannot build,
the step falls back to eager (train/speed.py) and this test skips, saying why -- it must not pass
by comparing eager with eager.
"""
import pytest
import torch
from torch import nn

from simsiam import get_preset
from simsiam.config import apply_overrides
from simsiam.methods import build_method
from simsiam.optim import build_optimizer
from simsiam.resolve import resolve
from simsiam.train.step import LrSchedule, TrainStep

STEPS = 4


class TwoConvs(nn.Module):
    """A backbone as the method expects one: pooled features ``(B, num_features)``."""

    num_features = 16

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 3, padding=1, bias=False)
        self.body = nn.Sequential(nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 16, 3, stride=2, padding=1, bias=False),
                                  nn.BatchNorm2d(16), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())

    def forward(self, x):  # (B, 1, 8, 8) -> (B, 16)
        return self.body(self.conv1(x))


def _losses(compiled: bool, views) -> tuple[list[float], torch.Tensor, str]:
    cfg = resolve(apply_overrides(get_preset("digits"), [
        "run.amp=off", f"run.compile={str(compiled).lower()}", "model.dim=32", "model.proj_hidden=32",
        "optim.batch_size=32", "optim.epochs=1"]))
    torch.manual_seed(0)
    method = build_method(cfg, 1, TwoConvs()).train()
    optimizer = build_optimizer(method.param_groups(), cfg.optim)
    warnings: list[str] = []
    step = TrainStep(method, optimizer, LrSchedule.from_config(cfg, STEPS), cfg, torch.device("cpu"), warnings.append)
    losses = [step(views, i)["loss"].item() for i in range(STEPS)]
    if compiled and step.compile_state != "on":
        pytest.skip(f"inductor cannot compile on this machine: {' '.join(warnings)}")
    return losses, method.backbone.conv1.weight.detach().clone(), step.compile_state


def test_compiled_step_follows_the_eager_loss_curve():
    gen = torch.Generator().manual_seed(1)
    views = tuple(torch.randn(32, 1, 8, 8, generator=gen) for _ in range(2))
    eager, eager_weight, eager_state = _losses(False, views)
    compiled, compiled_weight, compiled_state = _losses(True, views)
    assert (eager_state, compiled_state) == ("off", "on")
    assert eager[0] != eager[-1]  # the steps really trained: the curve moves
    assert compiled == pytest.approx(eager, abs=1e-4)
    assert torch.allclose(compiled_weight, eager_weight, atol=1e-5, rtol=1e-4)
