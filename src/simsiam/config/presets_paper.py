"""The paper's recipes as written: ``imagenet`` (section 2, ResNet-50) and ``cifar10`` (appendix D)."""
from __future__ import annotations

from .schema import Config


def imagenet() -> Config:
    """Section 2: ResNet-50, 3-layer projector (2048), predictor bottleneck 512, batch 512, 100 epochs."""
    cfg = Config(preset="imagenet")
    cfg.data.dataset, cfg.data.image_size = "imagefolder", 224
    cfg.aug.recipe = "imagenet"
    cfg.model.backbone, cfg.model.width = "resnet50", 64
    cfg.model.proj_layers, cfg.model.proj_hidden, cfg.model.dim = 3, 2048, 2048
    cfg.optim.epochs, cfg.optim.batch_size = 100, 512
    cfg.optim.base_lr, cfg.optim.weight_decay = 0.05, 1e-4
    cfg.monitor.knn_k, cfg.monitor.every = 200, 5  # a 1.28M-image bank is costly: every 5 epochs
    cfg.run.out_dir = "runs/imagenet"
    return cfg


def cifar10() -> Config:
    """Appendix D exactly: CIFAR ResNet-18, 2-layer projector, d=2048, no blur, lr 0.03, wd 5e-4, 800 epochs."""
    cfg = Config(preset="cifar10")
    cfg.data.dataset, cfg.data.image_size = "cifar10", 32
    cfg.aug.recipe = "cifar"
    cfg.model.backbone, cfg.model.width = "resnet18_cifar", 64
    cfg.model.proj_layers, cfg.model.proj_hidden, cfg.model.dim = 2, 2048, 2048
    cfg.optim.epochs, cfg.optim.batch_size = 800, 512
    cfg.optim.base_lr, cfg.optim.weight_decay = 0.03, 5e-4
    cfg.run.out_dir = "runs/cifar10"
    return cfg
