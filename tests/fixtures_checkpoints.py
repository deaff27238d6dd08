"""Builders of small simsiam checkpoints for the evaluation and export tests.

A checkpoint is made the way training makes one (``build_method`` + ``make_checkpoint`` +
``save_atomic``), from the ``digits`` preset with the backbone changed as a test needs, so no
test has to train.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from simsiam.artifacts import checkpoint as ckpt_io
from simsiam.config import Config
from simsiam.config.presets import get_preset
from simsiam.methods import build_method
from simsiam.resolve import resolve


def small_config(backbone: str = "resnet18_cifar", width: int = 8, in_channels: int = 1,
                 pool_grid: int = 1, feature_stages: int = 1) -> Config:
    """The digits preset (8x8 grey images, d=64 heads) with the given backbone."""
    cfg = get_preset("digits")
    cfg.model.backbone, cfg.model.width, cfg.model.in_channels = backbone, width, in_channels
    cfg.model.pool_grid, cfg.model.feature_stages = pool_grid, feature_stages
    return resolve(cfg)


def randomise_bn(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give every BN layer non-trivial weights and running statistics, so that an export that drops
    or mixes them up changes the features (fresh BN is the identity and would hide it)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                n = m.num_features
                m.running_mean.copy_(0.1 * torch.randn(n, generator=gen))
                m.running_var.copy_(0.5 + torch.rand(n, generator=gen))
                m.num_batches_tracked.fill_(7)
                if m.affine:
                    m.weight.copy_(0.5 + torch.rand(n, generator=gen))
                    m.bias.copy_(0.1 * torch.randn(n, generator=gen))
    return model


def save_checkpoint(model: nn.Module, cfg: Config, path: Path) -> Path:
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    return ckpt_io.save_atomic(ckpt_io.make_checkpoint(model=model, optimizer=optimizer, epoch=1, step=1,
                                                       config=cfg.to_dict()), path)


def make_checkpoint_file(path: Path, backbone: str = "resnet18_cifar", width: int = 8, in_channels: int = 1,
                         seed: int = 0, pool_grid: int = 1, feature_stages: int = 1
                         ) -> tuple[Path, nn.Module, Config]:
    """Build a method with random weights (BN statistics randomised too) and save it at ``path``."""
    torch.manual_seed(seed)
    cfg = small_config(backbone, width, in_channels, pool_grid, feature_stages)
    model = randomise_bn(build_method(cfg, in_channels), seed)
    return save_checkpoint(model, cfg, path), model.eval(), cfg
