"""The reference per-image pipeline: PIL images through torchvision transforms, as the paper's code runs.

It is the ground truth that :class:`~simsiam.augment.batched.BatchAugment` is tested against, and
the pipeline used for variable-size image files (decoded in DataLoader workers).
"""
from __future__ import annotations

from typing import Callable

import torch
from PIL import Image
from torchvision import transforms as T

from ..config import AugConfig
from .recipes import aug_values, blur_kernel_size, check_mean_std


class EnsureMode:
    """Convert a PIL image to ``"L"`` (1 channel) or ``"RGB"`` (3 channels) if it is not already.

    Files can be palette, RGBA or grayscale whatever the dataset is; converting first makes the
    output channel count the one the model expects. A class, not a lambda, so it pickles into
    DataLoader workers.
    """

    def __init__(self, channels: int):
        if channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, got {channels}")
        self.mode = "L" if channels == 1 else "RGB"

    def __call__(self, img: Image.Image) -> Image.Image:
        return img if img.mode == self.mode else img.convert(self.mode)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(mode={self.mode!r})"


def build_view_transform(aug: AugConfig, size: int, channels: int, mean, std) -> Callable[[Image.Image], torch.Tensor]:
    """One random view of a PIL image: a float tensor ``(channels, size, size)``, normalised.

    The order of operations is the paper's (crop, jitter, grayscale, blur, flip). Ops that cannot
    change anything (probability 0, or colour ops on one channel) are left out, which only saves time.
    """
    v = aug_values(aug)
    mean, std = check_mean_std(mean, std, channels)
    ops: list = [
        EnsureMode(channels),
        T.RandomResizedCrop(size, scale=(v["crop_scale_min"], v["crop_scale_max"]),
                            ratio=(v["crop_ratio_min"], v["crop_ratio_max"])),
    ]
    # Saturation and hue need 3 channels; torchvision skips an op whose strength is 0.
    saturation, hue = (v["saturation"], v["hue"]) if channels == 3 else (0.0, 0.0)
    if v["jitter_p"] > 0 and max(v["brightness"], v["contrast"], saturation, hue) > 0:
        jitter = T.ColorJitter(v["brightness"], v["contrast"], saturation, hue)
        ops.append(T.RandomApply([jitter], p=v["jitter_p"]))
    if channels == 3 and v["grayscale_p"] > 0:
        ops.append(T.RandomGrayscale(p=v["grayscale_p"]))
    if v["blur_p"] > 0:
        blur = T.GaussianBlur(blur_kernel_size(size), sigma=(v["blur_sigma_min"], v["blur_sigma_max"]))
        ops.append(T.RandomApply([blur], p=v["blur_p"]))
    ops += [T.RandomHorizontalFlip(p=v["flip_p"]), T.ToTensor(), T.Normalize(mean, std)]
    return T.Compose(ops)


def build_eval_transform(size: int, channels: int, mean, std, resize: bool,
                         margin: bool = True) -> Callable[[Image.Image], torch.Tensor]:
    """The deterministic view for evaluation: a float tensor ``(channels, size, size)``, normalised.

    ``resize=True`` is the standard ImageNet protocol for variable-size files (shorter side to
    size*256/224, then a central crop); with ``margin=False`` the shorter side goes to ``size``
    itself, the central square as evaluation reads it from the image cache (what a model fine-tuned
    on a cached folder was tested on). In-memory datasets are already at their native size.
    """
    mean, std = check_mean_std(mean, std, channels)
    ops: list = [EnsureMode(channels)]
    if resize:
        ops += [T.Resize(int(size * 256 / 224) if margin else size), T.CenterCrop(size)]
    ops += [T.ToTensor(), T.Normalize(mean, std)]
    return T.Compose(ops)
