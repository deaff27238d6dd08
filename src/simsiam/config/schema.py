"""The typed configuration: one dataclass per component, and the closed vocabularies.

Every experiment is a :class:`Config`. Presets (``config.presets``) build one; a YAML file and
dotted overrides (``config.overrides``) change it; ``simsiam.resolve`` fills the values derived
from others and checks names against the registries, so that the config saved beside a result
states every number that produced it.

Each ablation of the paper is one field here, read in exactly one place of the code.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Optional


class ConfigError(ValueError):
    """A config key or value is invalid; the message names the key and what is allowed."""


@dataclass
class DataConfig:
    dataset: str = "fmnist"  # a key of simsiam.data.DATASETS
    data_dir: Optional[str] = None  # where the dataset lives (searched before built-in places)
    eval_split: str = "test"  # labelled held-out split for the kNN monitor ("" disables it)
    train_limit: int = 0  # use N training images, a class-stratified random subset (seed 0); 0: all
    eval_limit: int = 0  # use N held-out images, chosen the same way; 0: all
    image_size: int = 0  # crop size of a view; 0: the dataset's native size
    # "batched" (tensor ops on whole batches), "per_image" (PIL), "encoded" (a folder's bytes in one
    # memory-mapped store, decoded in batches by torchvision: data/encoded_store.py), "auto" (batched
    # where the data fit in memory or the decoded cache, else encoded, else per-image; shards: batched)
    pipeline: str = "auto"
    num_workers: int = -1  # DataLoader workers (per-image pipeline, shards' reading); -1: chosen from the machine and device
    # How the batched pipeline computes views on CPU: "native" (a C kernel built on first use,
    # augment/native.py), "torch" (tensor ops, as on GPU), "auto" (native where a C compiler works)
    augment_kernel: str = "auto"
    # Image folders decoded once into a memory-mapped uint8 array (data/cache.py), for the batched pipeline:
    cache: bool = True  # off: read the files every epoch (per-image pipeline)
    cache_dir: str = ""  # "": $SIMSIAM_CACHE_DIR/images, else ~/.cache/simsiam/images
    cache_side: int = 0  # stored side in pixels; 0: data.image_size
    cache_max_gb: float = 16.0  # a folder larger than this decoded stays on the per-image pipeline


@dataclass
class AugConfig:
    """The augmentation of one view. ``None`` fields take the recipe's value (see ``augment.RECIPES``)."""

    recipe: str = "imagenet"  # "imagenet" (paper, with blur), "cifar" (appendix D, no blur), "gray"
    crop_scale_min: Optional[float] = None
    crop_scale_max: Optional[float] = None
    crop_ratio_min: Optional[float] = None  # aspect ratio w/h of the crop box, drawn log-uniformly
    crop_ratio_max: Optional[float] = None
    flip_p: Optional[float] = None
    jitter_p: Optional[float] = None
    brightness: Optional[float] = None
    contrast: Optional[float] = None
    saturation: Optional[float] = None
    hue: Optional[float] = None
    grayscale_p: Optional[float] = None
    blur_p: Optional[float] = None
    blur_sigma_min: Optional[float] = None
    blur_sigma_max: Optional[float] = None


@dataclass
class ModelConfig:
    backbone: str = "resnet50"  # a key of simsiam.models.BACKBONES
    width: int = 64  # channels of the first residual stage (64 is the standard ResNet)
    in_channels: int = 0  # 0: from the dataset (1 for grayscale, 3 for colour)
    zero_init_residual: bool = True  # last BN gamma of every residual block starts at 0 (paper)
    pool_grid: int = 1  # the last stage pooled to a grid of this side, flattened (1: global average pooling)
    feature_stages: int = 1  # the last N stages give features, each at twice the grid side of the next (1: last only)
    proj_layers: int = 3  # 3 for ImageNet, 2 for the CIFAR recipe
    proj_hidden: int = 2048
    dim: int = 2048  # d, the output of the projector and of the predictor
    pred_hidden: int = 0  # 0: d/4, the paper's bottleneck
    predictor: str = "mlp"  # "mlp", "none" (identity, Table 1a), "frozen" (fixed at init, Table 1b)
    head_bn: str = "default"  # "none", "hidden", "default" (hidden + projector output), "all" (Table 3)
    proj_out_bn_affine: bool = True  # affine of the projector-output BN (Table 3c footnote)


@dataclass
class LossConfig:
    stop_grad: bool = True  # Figure 2: without it the representation collapses
    similarity: str = "cosine"  # "cosine" or "cross_entropy" (section 4.5)
    symmetry: str = "symmetric"  # "symmetric", "asymmetric", "asymmetric2x" (section 4.6)


@dataclass
class OptimConfig:
    epochs: int = 100  # 0: from budget_images and the number of training images (train/budget.py)
    budget_images: int = 0  # images seen in the whole run, when epochs=0 (the CPU presets' budget)
    batch_size: int = 512  # the global batch: the lr rule and DDP both read it as such
    base_lr: float = 0.05  # lr = base_lr * batch_size / 256
    momentum: float = 0.9
    weight_decay: float = 1e-4  # on every parameter, BN included (paper)
    warmup_epochs: float = 0.0
    fix_pred_lr: bool = True  # constant predictor lr (Table 1c; used by every later experiment)
    optimizer: str = "sgd"  # "sgd" (SimSiam, MoCo v2) or "lars" (SimCLR, BYOL, SwAV at batch 4096)


@dataclass
class HypothesisConfig:
    """Section 5's proof-of-concept variants; each field is read only by the method that implements it."""

    kstep: int = 0  # method=simsiam_kstep: SGD steps per refresh of the cached eta (1 = SimSiam, -1 = one epoch)
    ema_m: float = 0.0  # method=simsiam_ema: eta_x <- m eta_x + (1-m) F(T'(x)) per image (paper: 0.8; 0 = none)


@dataclass
class MethodsConfig:
    """Section 6: SimCLR, MoCo v2, BYOL, SwAV and the cross-ablations of 6.2.

    ``None`` fields take the chosen method's own default (``METHOD_DEFAULTS``) when resolved.
    """

    temperature: Optional[float] = None  # softmax temperature: SimCLR 0.1, MoCo v2 0.2, SwAV 0.1
    # EMA of the target encoder: MoCo v2 0.999; BYOL's base 0.99 (cosine-increasing to 1), 0 = no momentum encoder
    momentum: Optional[float] = None
    predictor: bool = False  # SimCLR/SwAV + SimSiam's prediction MLP on the predicting branch (section 6.2)
    # SimCLR: on the key branch (default off); SwAV: on the Sinkhorn targets (default on); BYOL with
    # methods.momentum=0: on the target, the online projection (default on)
    stop_grad: Optional[bool] = None
    moco_queue: int = 65536  # MoCo's queue of negative keys, K (clipped, with a warning, when longer than the data)
    swav_prototypes: int = 3000  # SwAV's number of prototypes (clusters)
    sinkhorn_iters: int = 3  # Sinkhorn-Knopp iterations for SwAV's targets
    sinkhorn_eps: float = 0.05  # Sinkhorn-Knopp entropy regularisation epsilon
    swav_queue: int = 0  # past embeddings per view added to Sinkhorn's batch once full (small batches); 0 = none
    swav_freeze_prototypes_epochs: float = 0.0  # prototypes get no update for this many epochs (SwAV: 1)


@dataclass
class MonitorConfig:
    every: int = 1  # epochs between monitor evaluations (the last is always one); 0: about 5 in the run
    knn_k: int = 200
    knn_t: float = 0.1
    baselines: bool = True  # at the end: raw-pixel and random-init kNN on the same data (cached per dataset)
    collapse_threshold: float = 0.1  # warn when std(z/||z||) * sqrt(d) falls below this
    stop_on_collapse: bool = False


@dataclass
class RunConfig:
    seed: int = 0
    out_dir: str = "runs/simsiam"
    device: str = "auto"  # "auto", "cpu", "cuda", "cuda:1", ...
    log_every: int = 20  # steps between per-step metric lines
    quiet: bool = False  # no progress bar, no step lines; epoch lines about once a minute (artifacts/runlog.py)
    deterministic: bool = False  # torch.use_deterministic_algorithms (slower; exact resume tests)
    channels_last: bool = False
    amp: str = "auto"  # "auto" (bf16 on CUDA, off on CPU), "bf16", "off"
    # torch.compile of the whole step (eager, with a line, where compiling fails): "true", "false", or
    # "auto": on where train/compile_pays.py holds a measurement that it pays for this model on this
    # device kind and precision over the run's steps. A bool in older configs means "true"/"false".
    compile: str = "auto"
    # Intra-op threads of a CPU step: 0 (auto) times the steps at 1, 2, 4, ... usable cores and keeps
    # the fastest, again when the step time jumps (train/threads.py); N fixes N.
    threads: int = 0
    sync_bn: bool = True  # under torchrun: SyncBatchNorm everywhere (paper); False keeps per-device BN
    # Mid-epoch checkpoints besides those at epochs' ends (0 = off): one once this many steps
    # or minutes have passed since the last checkpoint; with both set, whichever comes first. Under
    # torchrun the ranks decide every 10 steps. A stop signal always writes one (train/stop.py).
    checkpoint_every_steps: int = 0
    checkpoint_every_minutes: float = 0.0
    # An epoch's end writes a checkpoint once the last one is this old (0: at every epoch's end), so
    # that a small folder's one-step epochs do not write one a second; the run's last epoch and a stop
    # signal always write one.
    epoch_checkpoint_minutes: float = 1.0
    keep_checkpoints: int = 0  # earlier checkpoints kept as checkpoint-step<N>.pt beside checkpoint.pt
    # where records go: any of "jsonl" (metrics.jsonl, always written), "csv", "tensorboard" (an extra)
    loggers: list[str] = field(default_factory=lambda: ["jsonl"])


@dataclass
class Config:
    preset: str = ""
    method: str = "simsiam"  # a key of simsiam.methods.METHODS
    data: DataConfig = field(default_factory=DataConfig)
    aug: AugConfig = field(default_factory=AugConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    hypothesis: HypothesisConfig = field(default_factory=HypothesisConfig)
    methods: MethodsConfig = field(default_factory=MethodsConfig)
    monitor: MonitorConfig = field(default_factory=MonitorConfig)
    run: RunConfig = field(default_factory=RunConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# Closed vocabularies: checked when the config is resolved so that a typo fails before training.
CHOICES: dict[str, tuple[str, ...]] = {
    "data.pipeline": ("auto", "batched", "per_image", "encoded"),
    "data.augment_kernel": ("auto", "native", "torch"),
    "aug.recipe": ("imagenet", "cifar", "gray"),
    "model.predictor": ("mlp", "none", "frozen"),
    "model.head_bn": ("none", "hidden", "default", "all"),
    "loss.similarity": ("cosine", "cross_entropy"),
    "loss.symmetry": ("symmetric", "asymmetric", "asymmetric2x"),
    "run.amp": ("auto", "bf16", "off"),
    "run.compile": ("auto", "true", "false"),
    "optim.optimizer": ("sgd", "lars"),
}

# Values of list fields: each item must be one of these.
LIST_CHOICES: dict[str, tuple[str, ...]] = {
    "run.loggers": ("jsonl", "csv", "tensorboard"),
}

# Section 6: each method's own value for a ``methods.*`` field left at None. A method reads only its
# own fields; see ``_check_methods`` for the fields that would otherwise be silently ignored.
METHOD_DEFAULTS: dict[str, dict[str, Any]] = {
    "simclr": {"temperature": 0.1, "stop_grad": False},
    "moco": {"temperature": 0.2, "momentum": 0.999},
    "byol": {"momentum": 0.99, "stop_grad": True},
    "swav": {"temperature": 0.1, "stop_grad": True},
}
