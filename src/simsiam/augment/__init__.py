"""SimSiam's view augmentations: the paper's recipes, a per-image torchvision path, a batched tensor path.

* :func:`build_view_transform` / :func:`build_eval_transform`: PIL image -> normalised tensor, per
  image (DataLoader workers; variable-size image files). This is the reference implementation.
* :class:`BatchAugment`: the same distribution of views computed on whole uint8 batches with
  tensor ops on the batch's device (in-memory datasets; GPU augmentation).
* :func:`normalize_batch`: the un-augmented eval path for in-memory uint8 batches.
"""
from .batched import BatchAugment, normalize_batch
from .per_image import build_eval_transform, build_view_transform
from .recipes import RECIPES, aug_values, blur_kernel_size

__all__ = [
    "RECIPES",
    "BatchAugment",
    "aug_values",
    "blur_kernel_size",
    "build_eval_transform",
    "build_view_transform",
    "normalize_batch",
]
