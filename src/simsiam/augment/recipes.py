"""The paper's augmentation recipes and the helpers both pipelines share.

A recipe gives a value for every :class:`~simsiam.config.AugConfig` field except ``recipe``;
``config.resolve`` copies it into the config so the saved config states every number used.
"""
from __future__ import annotations

import dataclasses

from ..config import AugConfig

# Chen & He 2021, section 4 / appendix A (ImageNet, as in MoCo v2) and appendix D (CIFAR: no blur).
_IMAGENET = {
    "crop_scale_min": 0.2,
    "crop_scale_max": 1.0,
    # RandomResizedCrop's aspect-ratio range (torchvision's default, which the paper's code uses).
    "crop_ratio_min": 3.0 / 4.0,
    "crop_ratio_max": 4.0 / 3.0,
    "flip_p": 0.5,
    "jitter_p": 0.8,
    "brightness": 0.4,
    "contrast": 0.4,
    "saturation": 0.4,
    "hue": 0.1,
    "grayscale_p": 0.2,
    "blur_p": 0.5,
    "blur_sigma_min": 0.1,
    "blur_sigma_max": 2.0,
}

RECIPES: dict[str, dict[str, float]] = {
    "imagenet": dict(_IMAGENET),
    "cifar": {**_IMAGENET, "blur_p": 0.0},
    # One-channel data has no colour: saturation, hue and grayscale would be no-ops, so they are off.
    "gray": {**_IMAGENET, "saturation": 0.0, "hue": 0.0, "grayscale_p": 0.0, "blur_p": 0.0},
}

# Tries of RandomResizedCrop before it falls back to a central crop.
CROP_TRIES = 10


def aug_values(aug: AugConfig) -> dict[str, float]:
    """Every augmentation parameter as a float: the config's value, or the recipe's where it is None.

    ``config.resolve`` already fills the Nones; doing it here too lets the augmentations be built
    from a bare ``AugConfig(recipe=...)`` (tests, notebooks) without resolving a whole config.
    """
    if aug.recipe not in RECIPES:
        raise ValueError(f"unknown augmentation recipe {aug.recipe!r}; choose one of: {', '.join(RECIPES)}")
    recipe = RECIPES[aug.recipe]
    values = {}
    for f in dataclasses.fields(AugConfig):
        if f.name == "recipe":
            continue
        value = getattr(aug, f.name)
        values[f.name] = float(recipe[f.name] if value is None else value)
    _check(values)
    return values


def _check(v: dict[str, float]) -> None:
    """Reject values that torchvision would reject (or silently misuse) with a message naming the field."""
    if not 0.0 < v["crop_scale_min"] <= v["crop_scale_max"] <= 1.0:
        raise ValueError(f"aug.crop_scale_min/max must satisfy 0 < min <= max <= 1, got "
                         f"{v['crop_scale_min']}, {v['crop_scale_max']}")
    if not 0.0 < v["crop_ratio_min"] <= v["crop_ratio_max"]:
        raise ValueError(f"aug.crop_ratio_min/max (the crop's width/height) must satisfy 0 < min <= max, got "
                         f"{v['crop_ratio_min']}, {v['crop_ratio_max']}; 1 and 1 give square crops")
    for name in ("flip_p", "jitter_p", "grayscale_p", "blur_p"):
        if not 0.0 <= v[name] <= 1.0:
            raise ValueError(f"aug.{name} is a probability, got {v[name]}")
    for name in ("brightness", "contrast", "saturation"):
        if v[name] < 0:
            raise ValueError(f"aug.{name} must be non-negative, got {v[name]}")
    if not 0.0 <= v["hue"] <= 0.5:
        raise ValueError(f"aug.hue must be in [0, 0.5], got {v['hue']}")
    if v["blur_p"] > 0 and not 0.0 < v["blur_sigma_min"] <= v["blur_sigma_max"]:
        raise ValueError(f"aug.blur_sigma_min/max must satisfy 0 < min <= max, got "
                         f"{v['blur_sigma_min']}, {v['blur_sigma_max']}")


def blur_kernel_size(size: int) -> int:
    """Odd Gaussian kernel about 10% of the crop size, at least 3 (23 for 224, 3 for 32).

    The paper's code blurs with PIL's unbounded radius; torchvision needs a finite kernel and the
    10% rule (from BYOL / SimCLR) covers +-2.5 sigma for the largest sigma at ImageNet size.
    """
    k = int(0.1 * size)
    k = k if k % 2 == 1 else k + 1
    return max(3, k)


def check_mean_std(mean, std, channels: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Normalisation statistics as ``channels``-long float tuples (a scalar is broadcast)."""
    def as_tuple(x, name):
        t = (float(x),) * channels if isinstance(x, (int, float)) else tuple(float(v) for v in x)
        if len(t) != channels:
            raise ValueError(f"{name} has {len(t)} values but the images have {channels} channels")
        return t

    mean_t, std_t = as_tuple(mean, "mean"), as_tuple(std, "std")
    if any(s <= 0 for s in std_t):
        raise ValueError(f"std must be positive, got {std_t}")
    return mean_t, std_t
