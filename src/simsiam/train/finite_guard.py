"""Steps whose gradients are not finite: checked after every backward, skipped, counted, and acted on.

Why a guard at all: torch 2.14's CPU bf16 convolution backward returns non-finite weight gradients
now and then for a 3x3 stride-2 convolution on a 1x1 feature map with two OpenMP threads (5 of 20
tries in isolation; 0 of 20 on 2x2 maps, at stride 1, or with one thread). Any backbone whose last
stages reach 1x1 -- timm models on small images, the built-in ones on 8-16 px inputs -- meets it,
and one such step applied would turn every weight into NaN. The fault is torch's, not the recipe's.

What happens to such a step (:class:`NonFiniteSteps`):

- it is never applied (no optimiser step, no momentum-encoder update) and is counted;
- under ``run.amp=auto`` with bf16 in use, the first one switches the run to fp32 for the rest of
  it (the caller says so in one line and records it, so that a resume stays in fp32);
- otherwise (an explicit ``run.amp=bf16``, or fp32) :data:`MAX_CONSECUTIVE_SKIPS` in a row stop
  the run: a model whose every step is non-finite is not training.

The check is one fused pass over the gradients (the total 2-norm via ``torch.nn.utils.get_total_norm``,
which is non-finite exactly when a gradient is, short of a norm above 1e19), reduced across the ranks
under torchrun so that every rank skips the same steps.
"""
from __future__ import annotations

from typing import Iterable

import torch

from ..parallel import distributed as dist

MAX_CONSECUTIVE_SKIPS = 3

APPLIED, SKIPPED, SWITCH_TO_FP32, STOP = "applied", "skipped", "switch to fp32", "stop"


def gradients_finite(parameters: Iterable[torch.nn.Parameter]) -> bool:
    """Whether every gradient is finite, on every rank (one host synchronisation per step)."""
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads:
        return True
    bad = (~torch.isfinite(torch.nn.utils.get_total_norm(grads))).float()
    if dist.is_enabled():
        bad = bad.to(dist.collective_device())
        torch.distributed.all_reduce(bad, op=torch.distributed.ReduceOp.MAX)
    return not bool(bad.item())


class NonFiniteSteps:
    """The verdict on each step's gradients and the counts behind it (see the module's docstring).

    ``amp_requested`` is ``run.amp`` as the user set it ("auto", "bf16", "off"); ``bf16`` whether
    the step currently runs under bf16 autocast.
    """

    def __init__(self, amp_requested: str, bf16: bool):
        self.amp_requested, self.bf16 = amp_requested, bf16
        self.skipped = 0  # steps skipped in this process's life
        self.consecutive = 0
        self.first_skipped_step = -1  # of the current run of consecutive skips

    def verdict(self, finite: bool, step: int) -> str:
        """APPLIED, or for a step to skip: SKIPPED, SWITCH_TO_FP32 (the caller leaves bf16) or STOP."""
        if finite:
            self.consecutive = 0
            return APPLIED
        self.skipped += 1
        if self.consecutive == 0:
            self.first_skipped_step = step
        self.consecutive += 1
        if self.bf16 and self.amp_requested == "auto":
            self.bf16, self.consecutive = False, 0
            return SWITCH_TO_FP32
        return STOP if self.consecutive >= MAX_CONSECUTIVE_SKIPS else SKIPPED


def switch_line(step: int, device_type: str) -> str:
    """The one line a run prints when ``run.amp=auto`` leaves bf16."""
    cause = ("torch's CPU bf16 convolution backward can return them for small feature maps, e.g. 1x1"
             if device_type == "cpu" else "bf16 rounding or a bf16 kernel")
    return (f"step {step}: non-finite gradients under bf16 ({cause}); the step was skipped and the run goes "
            "on in fp32 (run.amp=off) from here, recorded so that a resume keeps fp32")


def stop_message(first_step: int, last_step: int, amp: str, run_dir, has_checkpoint: bool) -> str:
    """Why a run stopped after :data:`MAX_CONSECUTIVE_SKIPS` skipped steps in a row, and what to do."""
    what = (f"{MAX_CONSECUTIVE_SKIPS} steps in a row (steps {first_step}-{last_step}) had non-finite gradients "
            "and were skipped; training stopped")
    kept = f"The last checkpoint, {run_dir}/checkpoint.pt, is intact -- " if has_checkpoint else \
        "No checkpoint was written yet -- "
    if amp == "bf16":
        then = (f"resume it in fp32: simsiam pretrain --resume {run_dir} run.amp=off" if has_checkpoint else
                "start anew with run.amp=off")
        return (f"{what}. The run is in bf16 (run.amp=bf16), the likely cause: torch's CPU bf16 convolution "
                f"backward fails on small feature maps. {kept}{then}; run.amp=auto switches to fp32 by itself")
    return (f"{what}. {kept}lower optim.base_lr or add optim.warmup_epochs, then start anew "
            "(resuming would replay the same steps)")
