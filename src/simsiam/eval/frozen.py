"""A frozen backbone for linear evaluation, and the check that it really stayed frozen.

The paper's protocol needs the backbone untouched: no weight update and no BN running-statistic
update (a BN layer in train mode would update its running mean/var on every forward pass, even
under ``torch.no_grad``). :func:`assert_backbone_unchanged` compares every parameter and buffer
with the checkpoint as read from disk -- the sanity check of the official linear evaluation.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ..artifacts import checkpoint as ckpt_io

BACKBONE_PREFIX = "backbone."


class BackboneChanged(RuntimeError):
    """A backbone weight or BN buffer changed during linear evaluation: the protocol was broken."""


def freeze(backbone: nn.Module) -> nn.Module:
    """Eval mode (BN uses and keeps its running statistics) and no gradients, in place."""
    backbone.eval()
    backbone.requires_grad_(False)
    return backbone


def backbone_state_from_disk(path: str | Path) -> dict[str, torch.Tensor]:
    """The backbone's parameters and buffers exactly as the checkpoint file stores them.

    Keys without the ``backbone.`` prefix, i.e. as ``backbone.state_dict()`` names them.
    """
    saved = ckpt_io.load(path)
    state = {k[len(BACKBONE_PREFIX):]: v for k, v in saved["model"].items() if k.startswith(BACKBONE_PREFIX)}
    if not state:
        raise ckpt_io.CheckpointError(f"checkpoint {str(path)!r} holds no 'backbone.*' tensors; "
                                      "is it a simsiam pretraining checkpoint?")
    return state


def assert_backbone_unchanged(backbone: nn.Module, reference: dict[str, torch.Tensor], when: str = "") -> None:
    """Raise :class:`BackboneChanged` naming the first parameter or buffer (BN running mean/var,
    batch counter) of ``backbone`` that differs from ``reference`` (see :func:`backbone_state_from_disk`)."""
    current = backbone.state_dict()
    missing = sorted(set(reference) ^ set(current))
    if missing:
        raise BackboneChanged(f"the backbone's keys differ from the checkpoint's{when and ' ' + when}: "
                              f"{missing[:5]}")
    for key, ref in reference.items():
        now = current[key].detach().to("cpu")
        if now.shape != ref.shape or not torch.equal(now, ref.to(now.dtype)):
            kind = "BN statistic" if key.endswith(("running_mean", "running_var", "num_batches_tracked")) else "weight"
            raise BackboneChanged(
                f"linear evaluation changed the frozen backbone's {kind} {key!r}{when and ' ' + when}: the backbone "
                "must stay in eval mode with no gradient (a BN layer in train mode updates its running statistics "
                "even without gradients). This is a bug in the evaluation code, not in the checkpoint.")
