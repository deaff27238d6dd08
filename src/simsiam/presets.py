"""Named recipes: each a function returning a :class:`Config`, with a comment on every choice.

``cifar10`` and ``imagenet`` are the paper's recipes as written (appendix D and section 2);
``fmnist`` is a CPU recipe sized for about 15 minutes of 2 cores; ``digits`` is a smoke test.
"""
from __future__ import annotations

from typing import Callable

from .config import Config
from .presets_methods import METHOD_PRESETS


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


def fmnist() -> Config:
    """A CPU recipe for Fashion-MNIST (28x28 grayscale): the CIFAR recipe scaled to 2 cores.

    Reduced width and head size keep one epoch short; the grayscale-aware augmentation jitters
    only brightness and contrast.
    """
    cfg = cifar10()
    cfg.preset = "fmnist"
    cfg.data.dataset, cfg.data.image_size = "fmnist", 28
    cfg.aug.recipe = "gray"
    cfg.model.width = 16  # a quarter of ResNet-18's channels: ~1/16 of its FLOPs
    cfg.model.proj_hidden, cfg.model.dim = 512, 512  # predictor hidden d/4 = 128
    # Batch 128 at lr 0.2 x 128/256 = 0.1: twice the steps of batch 256 for the same compute, and a
    # higher lr suit a 10-epoch schedule (kNN after 2 epochs: 78.0% against 74.4% at batch 256, lr 0.06).
    cfg.optim.epochs, cfg.optim.batch_size = 10, 128
    cfg.optim.base_lr, cfg.optim.weight_decay = 0.2, 5e-4
    cfg.monitor.every = 2  # the kNN bank is 60k images: every other epoch (and the last) keeps it ~10% of the time
    cfg.run.channels_last = True  # measured 1.3x faster for this model on a 2-core CPU
    cfg.run.out_dir = "runs/fmnist"
    return cfg


def digits() -> Config:
    """scikit-learn's 8x8 digits: a run of seconds, for smoke tests and trying switches."""
    cfg = fmnist()
    cfg.preset = "digits"
    cfg.data.dataset, cfg.data.image_size = "digits", 8
    cfg.model.width, cfg.model.proj_hidden, cfg.model.dim = 8, 64, 64
    cfg.optim.epochs, cfg.optim.batch_size = 3, 128
    cfg.optim.base_lr = 0.06
    cfg.monitor.every = 1
    cfg.monitor.knn_k = 20
    cfg.run.out_dir = "runs/digits"
    cfg.run.log_every = 5
    return cfg


PRESETS: dict[str, Callable[[], Config]] = {
    "fmnist": fmnist,
    "cifar10": cifar10,
    "imagenet": imagenet,
    "digits": digits,
    **METHOD_PRESETS,  # section 6: simclr, moco_v2, byol, swav and their fmnist_* CPU recipes
}


def get_preset(name: str) -> Config:
    if name not in PRESETS:
        from .config import ConfigError

        raise ConfigError(f"unknown preset {name!r}; choose one of: {', '.join(PRESETS)}")
    return PRESETS[name]()
