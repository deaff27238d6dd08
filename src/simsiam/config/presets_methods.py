"""Named recipes for the other methods of section 6 (named in ``presets.PRESETS``).

Two per method: the paper's ImageNet recipe as SimSiam's Table 4 reproduces it (ResNet-50, two
224 views, 100 epochs; batch 4096 with LARS for SimCLR, BYOL and SwAV, 256 with SGD for MoCo v2),
and a CPU recipe on Fashion-MNIST that changes ``presets_cpu.fmnist()`` only where the method needs
it. Every CPU recipe is "the fmnist recipe + the method's small-scale settings" (``SMALL``), so
the same settings can be applied to another base preset (``small_overrides``).
"""
from __future__ import annotations

from typing import Callable

from .overrides import apply_overrides
from .presets_cpu import fmnist
from .presets_paper import imagenet
from .schema import Config


def _imagenet_large_batch(cfg: Config, base_lr: float) -> Config:
    """Batch 4096 with LARS, 10 warmup epochs, wd 1e-6: the SimCLR/BYOL/SwAV optimisation."""
    cfg.optim.batch_size, cfg.optim.optimizer = 4096, "lars"
    cfg.optim.base_lr, cfg.optim.weight_decay, cfg.optim.warmup_epochs = base_lr, 1e-6, 10
    return cfg


def simclr() -> Config:
    """SimCLR+: 3-layer projector (2048-2048-128, BN everywhere), t = 0.1, LARS lr 0.3 x B/256."""
    cfg = _imagenet_large_batch(imagenet(), base_lr=0.3)
    cfg.preset, cfg.method = "simclr", "simclr"
    cfg.model.proj_layers, cfg.model.proj_hidden, cfg.model.dim = 3, 2048, 128
    cfg.methods.temperature = 0.1
    cfg.run.out_dir = "runs/simclr"
    return cfg


def moco_v2() -> Config:
    """MoCo v2+: batch 256, SGD lr 0.03, wd 1e-4, 2-layer MLP head (2048-128, no BN), K = 65536,
    m = 0.999, t = 0.2, symmetrised loss."""
    cfg = imagenet()
    cfg.preset, cfg.method = "moco_v2", "moco"
    cfg.model.proj_layers, cfg.model.proj_hidden, cfg.model.dim, cfg.model.head_bn = 2, 2048, 128, "none"
    cfg.optim.batch_size, cfg.optim.base_lr, cfg.optim.weight_decay = 256, 0.03, 1e-4
    cfg.methods.temperature, cfg.methods.momentum, cfg.methods.moco_queue = 0.2, 0.999, 65536
    cfg.run.out_dir = "runs/moco_v2"
    return cfg


def byol() -> Config:
    """BYOL, SimSiam's 100-epoch reproduction (footnote 6): LARS lr 0.45 x B/256, wd 1e-6,
    tau_base 0.99; projector and predictor 4096-256, BN on hidden layers only; no constant-lr predictor."""
    cfg = _imagenet_large_batch(imagenet(), base_lr=0.45)
    cfg.preset, cfg.method = "byol", "byol"
    cfg.model.proj_layers, cfg.model.proj_hidden, cfg.model.dim = 2, 4096, 256
    cfg.model.pred_hidden, cfg.model.head_bn = 4096, "hidden"
    cfg.optim.fix_pred_lr = False
    cfg.methods.momentum = 0.99
    cfg.run.out_dir = "runs/byol"
    return cfg


def swav() -> Config:
    """SwAV+: 3-layer projector (2048-2048-128), 3000 prototypes, t = 0.1, Sinkhorn eps 0.05 x 3,
    prototypes frozen for the first epoch, LARS lr 0.3 x B/256; two views (no multi-crop)."""
    cfg = _imagenet_large_batch(imagenet(), base_lr=0.3)
    cfg.preset, cfg.method = "swav", "swav"
    cfg.model.proj_layers, cfg.model.proj_hidden, cfg.model.dim = 3, 2048, 128
    cfg.methods.temperature, cfg.methods.swav_prototypes = 0.1, 3000
    cfg.methods.sinkhorn_eps, cfg.methods.sinkhorn_iters = 0.05, 3
    cfg.methods.swav_freeze_prototypes_epochs = 1.0
    cfg.run.out_dir = "runs/swav"
    return cfg


# The CPU recipes' differences from ``presets_cpu.fmnist()`` (its batch, SGD schedule, epochs and
# projector hidden 512), one list per method, as ``key=value`` overrides. Chosen for 28x28 images
# and a batch of a few hundred: SimCLR's CIFAR temperature 0.5 (its paper's appendix B.9), MoCo's
# queue and momentum shortened to a run of a few thousand steps, SwAV's prototypes scaled to 10 classes.
SMALL: dict[str, list[str]] = {
    "simclr": ["method=simclr", "model.proj_layers=3", "model.dim=128", "methods.temperature=0.5"],
    "moco": ["method=moco", "model.dim=128", "model.head_bn=none", "methods.temperature=0.2",
             "methods.momentum=0.99", "methods.moco_queue=4096"],
    "byol": ["method=byol", "model.dim=128", "model.pred_hidden=512", "model.head_bn=hidden",
             "optim.fix_pred_lr=false", "methods.momentum=0.99"],
    "swav": ["method=swav", "model.proj_layers=3", "model.dim=128", "methods.temperature=0.1",
             "methods.swav_prototypes=100"],
}


def small_overrides(method: str) -> list[str]:
    """The CPU recipe of ``method`` as overrides on any small preset (fmnist, digits)."""
    return list(SMALL[method])


def _fmnist_recipe(method: str, name: str) -> Callable[[], Config]:
    def recipe() -> Config:
        cfg = apply_overrides(fmnist(), small_overrides(method))
        cfg.preset, cfg.run.out_dir = name, f"runs/{name}"
        return cfg

    recipe.__name__ = name
    recipe.__doc__ = f"presets.fmnist() with {method}'s small-scale settings: {', '.join(SMALL[method])}."
    return recipe


fmnist_simclr = _fmnist_recipe("simclr", "fmnist_simclr")
fmnist_moco = _fmnist_recipe("moco", "fmnist_moco")
fmnist_byol = _fmnist_recipe("byol", "fmnist_byol")
fmnist_swav = _fmnist_recipe("swav", "fmnist_swav")

METHOD_PRESETS: dict[str, Callable[[], Config]] = {
    "simclr": simclr,
    "moco_v2": moco_v2,
    "byol": byol,
    "swav": swav,
    "fmnist_simclr": fmnist_simclr,
    "fmnist_moco": fmnist_moco,
    "fmnist_byol": fmnist_byol,
    "fmnist_swav": fmnist_swav,
}
