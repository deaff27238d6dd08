"""Typed configuration: one dataclass per component, a YAML file and ``key=value`` overrides.

Every experiment is a :class:`Config`. Presets (``simsiam.presets``) build one; a YAML file and
dotted overrides (``optim.base_lr=0.1``) change it; :func:`resolve` fills the values that are
derived from others (the augmentation recipe's defaults, the predictor width d/4) so that the
config saved beside a result states every number that produced it.

Each ablation of the paper is one field here, read in exactly one place of the code.
"""
from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import yaml


class ConfigError(ValueError):
    """A config key or value is invalid; the message names the key and what is allowed."""


@dataclass
class DataConfig:
    dataset: str = "fmnist"  # a key of simsiam.data.DATASETS
    data_dir: Optional[str] = None  # where the dataset lives (searched before built-in places)
    eval_split: str = "test"  # labelled held-out split for the kNN monitor ("" disables it)
    train_limit: int = 0  # use only the first N training images (0: all); for quick runs
    eval_limit: int = 0  # use only the first N held-out images (0: all)
    image_size: int = 0  # crop size of a view; 0: the dataset's native size
    pipeline: str = "auto"  # "batched" (tensor ops on whole batches), "per_image" (PIL), "auto"
    num_workers: int = -1  # DataLoader workers for the per-image pipeline; -1: chosen from the machine


@dataclass
class AugConfig:
    """The augmentation of one view. ``None`` fields take the recipe's value (see ``augment.RECIPES``)."""

    recipe: str = "imagenet"  # "imagenet" (paper, with blur), "cifar" (appendix D, no blur), "gray"
    crop_scale_min: Optional[float] = None
    crop_scale_max: Optional[float] = None
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
    epochs: int = 100
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
    every: int = 1  # epochs between monitor evaluations (the last epoch is always evaluated)
    knn_k: int = 200
    knn_t: float = 0.1
    collapse_threshold: float = 0.1  # warn when std(z/||z||) * sqrt(d) falls below this
    stop_on_collapse: bool = False


@dataclass
class RunConfig:
    seed: int = 0
    out_dir: str = "runs/simsiam"
    device: str = "auto"  # "auto", "cpu", "cuda", "cuda:1", ...
    log_every: int = 20  # steps between per-step metric lines
    quiet: bool = False  # no progress bar; plain log lines (for log files)
    deterministic: bool = False  # torch.use_deterministic_algorithms (slower; exact resume tests)
    channels_last: bool = False
    amp: str = "auto"  # "auto" (bf16 on CUDA, off on CPU), "bf16", "off"
    compile: bool = False  # torch.compile the model (falls back with a message)
    sync_bn: bool = True  # under torchrun: SyncBatchNorm everywhere (paper); False keeps per-device BN


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
    "data.pipeline": ("auto", "batched", "per_image"),
    "aug.recipe": ("imagenet", "cifar", "gray"),
    "model.predictor": ("mlp", "none", "frozen"),
    "model.head_bn": ("none", "hidden", "default", "all"),
    "loss.similarity": ("cosine", "cross_entropy"),
    "loss.symmetry": ("symmetric", "asymmetric", "asymmetric2x"),
    "run.amp": ("auto", "bf16", "off"),
    "optim.optimizer": ("sgd", "lars"),
}

# Section 6: each method's own value for a ``methods.*`` field left at None. A method reads only its
# own fields; see ``_check_methods`` for the fields that would otherwise be silently ignored.
METHOD_DEFAULTS: dict[str, dict[str, Any]] = {
    "simclr": {"temperature": 0.1, "stop_grad": False},
    "moco": {"temperature": 0.2, "momentum": 0.999},
    "byol": {"momentum": 0.99, "stop_grad": True},
    "swav": {"temperature": 0.1, "stop_grad": True},
}


def _field_types(cls) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def valid_keys(cfg: Optional[Config] = None) -> list[str]:
    """Every dotted key a config accepts, e.g. ``optim.base_lr``."""
    keys = []
    for name, tp in _field_types(Config).items():
        if dataclasses.is_dataclass(tp):
            keys += [f"{name}.{sub}" for sub in _field_types(tp)]
        else:
            keys.append(name)
    return keys


def _coerce(key: str, value: Any, tp: Any) -> Any:
    """Convert ``value`` (a YAML scalar or a command-line string) to the field's type, or explain why not."""
    optional = typing.get_origin(tp) is typing.Union and type(None) in typing.get_args(tp)
    if optional:
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null", "")):
            return None
        tp = next(a for a in typing.get_args(tp) if a is not type(None))
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "1", "yes", "on"):
            return True
        if isinstance(value, str) and value.lower() in ("false", "0", "no", "off"):
            return False
        raise ConfigError(f"{key}: expected true/false, got {value!r}")
    if tp is int:
        if isinstance(value, bool):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        try:
            return int(str(value))
        except ValueError:
            raise ConfigError(f"{key}: expected an integer, got {value!r}") from None
    if tp is float:
        if isinstance(value, bool):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{key}: expected a number, got {value!r}") from None
    if tp is str:
        if value is None:
            return ""
        if isinstance(value, (dict, list)):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        if isinstance(value, bool):  # YAML 1.1 reads off/on/no/yes as booleans: run.amp=off means "off"
            return "on" if value else "off"
        return str(value)
    raise ConfigError(f"{key}: unsupported field type {tp}")


def set_value(cfg: Config, key: str, value: Any) -> None:
    """Set a dotted key (``optim.base_lr``) with type checking; unknown keys list the valid ones."""
    parts = key.split(".")
    target: Any = cfg
    for i, part in enumerate(parts):
        types = _field_types(type(target))
        if part not in types:
            scope = ".".join(parts[:i]) or "the config"
            choices = ", ".join(sorted(types))
            raise ConfigError(f"unknown config key {key!r}: {scope} has no field {part!r}; valid: {choices}")
        if i == len(parts) - 1:
            if dataclasses.is_dataclass(types[part]):
                raise ConfigError(f"{key!r} is a section; set one of its fields, e.g. {key}.{next(iter(_field_types(types[part])))}")
            setattr(target, part, _coerce(key, value, types[part]))
        else:
            if not dataclasses.is_dataclass(types[part]):
                raise ConfigError(f"unknown config key {key!r}: {'.'.join(parts[:i + 1])} is not a section")
            target = getattr(target, part)


def apply_mapping(cfg: Config, mapping: dict, prefix: str = "") -> Config:
    """Apply a nested dict (as read from YAML) onto ``cfg``."""
    for k, v in mapping.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            apply_mapping(cfg, v, key + ".")
        else:
            set_value(cfg, key, v)
    return cfg


def apply_overrides(cfg: Config, overrides: list[str]) -> Config:
    """Apply ``key=value`` strings; values are parsed as YAML scalars (``1e-3``, ``true``, ``none``)."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form key=value (e.g. optim.epochs=10)")
        key, raw = item.split("=", 1)
        value = yaml.safe_load(raw) if raw.strip() else ""
        set_value(cfg, key.strip(), value)
    return cfg


def load_yaml(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} does not exist")
    with open(path) as fh:
        data = yaml.safe_load(fh) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {str(path)!r} must hold a mapping of sections, got {type(data).__name__}")
    return data


def from_dict(data: dict) -> Config:
    """Rebuild a config saved with :meth:`Config.to_dict` (e.g. from a checkpoint)."""
    return apply_mapping(Config(), data)


def validate(cfg: Config) -> Config:
    for key, allowed in CHOICES.items():
        section, name = key.split(".")
        value = getattr(getattr(cfg, section), name)
        if value not in allowed:
            raise ConfigError(f"{key}={value!r} is not valid; choose one of: {', '.join(allowed)}")
    # Registries are imported here, not at module top, so that config stays import-light.
    from .data import DATASETS
    from .methods import METHODS
    from .models import BACKBONES

    for key, value, registry in (
        ("method", cfg.method, METHODS),
        ("data.dataset", cfg.data.dataset, DATASETS),
        ("model.backbone", cfg.model.backbone, BACKBONES),
    ):
        if value not in registry:
            raise ConfigError(f"{key}={value!r} is not valid; choose one of: {', '.join(sorted(registry))}")
    positive = {
        "optim.epochs": cfg.optim.epochs,
        "optim.batch_size": cfg.optim.batch_size,
        "model.dim": cfg.model.dim,
        "model.width": cfg.model.width,
        "monitor.knn_k": cfg.monitor.knn_k,
        "monitor.every": cfg.monitor.every,
    }
    for key, value in positive.items():
        if value <= 0:
            raise ConfigError(f"{key} must be positive, got {value}")
    if cfg.model.proj_layers < 1:
        raise ConfigError(f"model.proj_layers must be at least 1, got {cfg.model.proj_layers}")
    _check_hypothesis(cfg)
    _check_methods(cfg)
    return cfg


def _check_hypothesis(cfg: Config) -> None:
    """A section-5 field set without the method that reads it would be silently ignored: refuse it."""
    h = cfg.hypothesis
    if (h.kstep != 0) != (cfg.method == "simsiam_kstep"):
        raise ConfigError(f"hypothesis.kstep={h.kstep} with method={cfg.method!r}: the k-step alternation is "
                          "method=simsiam_kstep with hypothesis.kstep=K (K >= 1, or -1 for one epoch)")
    if h.kstep < -1:
        raise ConfigError(f"hypothesis.kstep must be >= 1, or -1 for one epoch, got {h.kstep}")
    if h.ema_m != 0 and cfg.method != "simsiam_ema":
        raise ConfigError(f"hypothesis.ema_m={h.ema_m} is read only by method=simsiam_ema (set it too)")
    if not 0 <= h.ema_m < 1:
        raise ConfigError(f"hypothesis.ema_m must be in [0, 1), got {h.ema_m}")


def _check_methods(cfg: Config) -> None:
    """Section-6 switches that the chosen method would silently ignore, and values out of range."""
    m = cfg.methods
    own = METHOD_DEFAULTS.get(cfg.method, {})
    stop_grad = m.stop_grad if m.stop_grad is not None else own.get("stop_grad")
    momentum = m.momentum if m.momentum is not None else own.get("momentum")
    for name in ("temperature", "momentum", "stop_grad"):
        if getattr(m, name) is not None and name not in own:
            users = "/".join(k for k, v in METHOD_DEFAULTS.items() if name in v)
            raise ConfigError(f"methods.{name} is read only by method={users}, not by method={cfg.method!r}")
    if m.predictor and cfg.method not in ("simclr", "swav"):
        raise ConfigError(f"methods.predictor=true is the SimCLR/SwAV cross-ablation (section 6.2); method="
                          f"{cfg.method!r} " + ("has none to add" if cfg.method == "moco" else
                                                "always has its predictor"))
    if cfg.method == "byol" and stop_grad is False and momentum:
        raise ConfigError("methods.stop_grad=false for BYOL needs methods.momentum=0: a momentum target "
                          "never receives a gradient")
    if m.temperature is not None and m.temperature <= 0:
        raise ConfigError(f"methods.temperature must be positive, got {m.temperature}")
    if m.momentum is not None and not 0 <= m.momentum < 1:
        raise ConfigError(f"methods.momentum must be in [0, 1), got {m.momentum}")
    for key, value in (("moco_queue", m.moco_queue), ("swav_prototypes", m.swav_prototypes),
                       ("sinkhorn_iters", m.sinkhorn_iters)):
        if value < 1:
            raise ConfigError(f"methods.{key} must be at least 1, got {value}")
    if m.sinkhorn_eps <= 0 or m.swav_queue < 0 or m.swav_freeze_prototypes_epochs < 0:
        raise ConfigError(f"methods.sinkhorn_eps must be positive and methods.swav_queue, "
                          f"methods.swav_freeze_prototypes_epochs non-negative; got {m.sinkhorn_eps}, "
                          f"{m.swav_queue}, {m.swav_freeze_prototypes_epochs}")


def resolve(cfg: Config) -> Config:
    """Fill derived values in place (augmentation from its recipe, predictor width) and validate."""
    from .augment import RECIPES

    validate(cfg)
    recipe = RECIPES[cfg.aug.recipe]
    for f in dataclasses.fields(AugConfig):
        if f.name != "recipe" and getattr(cfg.aug, f.name) is None:
            setattr(cfg.aug, f.name, recipe[f.name])
    if cfg.model.pred_hidden == 0:
        cfg.model.pred_hidden = max(1, cfg.model.dim // 4)
    for name, value in METHOD_DEFAULTS.get(cfg.method, {}).items():
        if getattr(cfg.methods, name) is None:
            setattr(cfg.methods, name, value)
    return cfg
