"""Loaders for every supported dataset, and the ``DATASETS`` registry.

Each loader has the signature ``loader(split, data_dir=None) -> Dataset``.
Nothing is ever downloaded: data is read from ``data_dir``, a per-dataset
environment variable, or (Fashion-MNIST only) the Debian package's location.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np
import torch
from torch.utils.data import Dataset

from .cifar import read_cifar_batch
from .files import (
    IMAGE_EXTENSIONS,
    IMAGENET_MEAN,
    IMAGENET_STD,
    ImageFiles,
    list_images,
)
from .idx import read_idx
from .memory import InMemoryImages
from .search import candidate_dirs, check_split, find_files, not_found, require_dir
from .shards import load_shards
from .tinyimagenet import load_tinyimagenet

# ---------------------------------------------------------------------------- Fashion-MNIST

FMNIST_MEAN, FMNIST_STD = (0.2860,), (0.3530,)  # over the 60k training images
FMNIST_SYSTEM_DIR = "/usr/share/datasets/fashion-mnist"  # Debian package dataset-fashion-mnist
FMNIST_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
FMNIST_HOW = (
    "run `sudo apt-get install dataset-fashion-mnist` (installs into "
    f"{FMNIST_SYSTEM_DIR}), or pass --data-dir / data.data_dir= (or set SIMSIAM_FMNIST_DIR) "
    "pointing to the directory holding the four IDX files "
    "train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz"
)


def _check_labels(name: str, labels: np.ndarray, num_classes: int) -> None:
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"{name}: labels must lie in 0..{num_classes - 1}, got {labels.min()}..{labels.max()}")


def load_fmnist(split: str, data_dir: Optional[str] = None) -> InMemoryImages:
    """Fashion-MNIST from its IDX files (gzipped or plain); splits "train" and "test"."""
    check_split("fmnist", split, tuple(FMNIST_FILES))
    dirs = candidate_dirs(data_dir, "SIMSIAM_FMNIST_DIR", ("fashion-mnist", "FashionMNIST/raw"), (FMNIST_SYSTEM_DIR,))
    required = [(stem + ".gz", stem) for stem in FMNIST_FILES[split]]
    image_path, label_path = find_files("fmnist", split, dirs, required, FMNIST_HOW)
    images, labels = read_idx(image_path), read_idx(label_path)
    if images.ndim != 3 or images.dtype != np.uint8:
        raise ValueError(f"{image_path!r}: expected uint8 images (N, H, W), got {images.dtype} {images.shape}")
    if labels.shape != (images.shape[0],):
        raise ValueError(f"{label_path!r}: {labels.size} labels for {images.shape[0]} images in {image_path!r}")
    _check_labels("fmnist", labels, 10)
    # (N, H, W) -> (N, 1, H, W) is a free view of the contiguous array.
    return InMemoryImages(torch.from_numpy(images[:, None]), labels, "fmnist", 10, FMNIST_MEAN, FMNIST_STD)


# ---------------------------------------------------------------------------- CIFAR-10/100


@dataclass(frozen=True)
class CifarSpec:
    name: str
    subdir: str  # what torchvision's archive extracts to
    files: dict  # split -> batch file names
    label_key: bytes
    num_classes: int
    mean: tuple
    std: tuple
    archive: str


CIFAR10 = CifarSpec(
    "cifar10",
    "cifar-10-batches-py",
    {"train": tuple(f"data_batch_{i}" for i in range(1, 6)), "test": ("test_batch",)},
    b"labels",
    10,
    (0.4914, 0.4822, 0.4465),
    (0.2470, 0.2435, 0.2616),
    "cifar-10-python.tar.gz",
)
CIFAR100 = CifarSpec(
    "cifar100",
    "cifar-100-python",
    {"train": ("train",), "test": ("test",)},
    b"fine_labels",
    100,
    (0.5071, 0.4865, 0.4409),
    (0.2673, 0.2564, 0.2762),
    "cifar-100-python.tar.gz",
)


def _load_cifar(spec: CifarSpec, split: str, data_dir: Optional[str]) -> InMemoryImages:
    check_split(spec.name, split, tuple(spec.files))
    env_var = f"SIMSIAM_{spec.name.upper()}_DIR"
    dirs = candidate_dirs(data_dir, env_var, (spec.subdir,))
    how = (
        f"extract torchvision's {spec.archive} (it unpacks to {spec.subdir}/) under a directory "
        f"and pass --data-dir / data.data_dir= (or set {env_var}) pointing to it"
    )
    paths = find_files(spec.name, split, dirs, [(f,) for f in spec.files[split]], how)
    parts = [read_cifar_batch(p, spec.label_key) for p in paths]
    images = np.concatenate([imgs for imgs, _ in parts])
    labels = np.concatenate([lbls for _, lbls in parts])
    _check_labels(spec.name, labels, spec.num_classes)
    return InMemoryImages(torch.from_numpy(images), labels, spec.name, spec.num_classes, spec.mean, spec.std)


def load_cifar10(split: str, data_dir: Optional[str] = None) -> InMemoryImages:
    """CIFAR-10 from torchvision's python batches; splits "train" (50k) and "test" (10k)."""
    return _load_cifar(CIFAR10, split, data_dir)


def load_cifar100(split: str, data_dir: Optional[str] = None) -> InMemoryImages:
    """CIFAR-100 (fine labels) from torchvision's python files; splits "train" and "test"."""
    return _load_cifar(CIFAR100, split, data_dir)


# ---------------------------------------------------------------------------- STL-10

STL_SIZE = 96
STL_IMAGE_BYTES = 3 * STL_SIZE * STL_SIZE
# split -> parts, each (images file, labels file or None for unlabelled)
STL_PARTS = {
    "train": (("train_X.bin", "train_y.bin"),),
    "test": (("test_X.bin", "test_y.bin"),),
    "unlabeled": (("unlabeled_X.bin", None),),
    "train+unlabeled": (("train_X.bin", "train_y.bin"), ("unlabeled_X.bin", None)),
}
STL_HOW = (
    "extract torchvision's stl10_binary.tar.gz (it unpacks to stl10_binary/) under a directory "
    "and pass --data-dir / data.data_dir= (or set SIMSIAM_STL10_DIR) pointing to it"
)


def _stl_count(path: str) -> int:
    size = os.path.getsize(path)
    if size == 0 or size % STL_IMAGE_BYTES:
        raise ValueError(f"STL-10 file {path!r} has {size} bytes, not a positive multiple of {STL_IMAGE_BYTES}")
    return size // STL_IMAGE_BYTES


def _read_stl_images(path: str, out: np.ndarray, chunk: int = 4096) -> None:
    """Fill ``out`` (N, 3, 96, 96) from an STL-10 image file.

    The file stores each channel column-major, so the last two axes are
    transposed. Copying chunk by chunk from a memmap keeps peak memory at one
    copy of the data (the unlabelled file alone is 2.7 GB).
    """
    stored = np.memmap(path, dtype=np.uint8, mode="r", shape=out.shape)
    for start in range(0, out.shape[0], chunk):
        out[start : start + chunk] = stored[start : start + chunk].transpose(0, 1, 3, 2)
    del stored  # close the mapping now rather than at garbage collection


def _read_stl_labels(path: Optional[str], count: int) -> np.ndarray:
    if path is None:
        return np.full(count, -1, dtype=np.int64)
    labels = np.fromfile(path, dtype=np.uint8).astype(np.int64) - 1  # stored as 1..10
    if labels.shape != (count,):
        raise ValueError(f"STL-10 labels {path!r}: {labels.size} labels for {count} images")
    _check_labels("stl10", labels, 10)
    return labels


def load_stl10(split: str, data_dir: Optional[str] = None) -> InMemoryImages:
    """STL-10 from torchvision's binary files; splits "train", "test", "unlabeled", "train+unlabeled".

    Unlabelled images get label -1.
    """
    check_split("stl10", split, tuple(STL_PARTS))
    dirs = candidate_dirs(data_dir, "SIMSIAM_STL10_DIR", ("stl10_binary",))
    names = [name for part in STL_PARTS[split] for name in part if name]
    found = dict(zip(names, find_files("stl10", split, dirs, [(n,) for n in names], STL_HOW)))
    counts = [_stl_count(found[x_name]) for x_name, _ in STL_PARTS[split]]
    images = np.empty((sum(counts), 3, STL_SIZE, STL_SIZE), dtype=np.uint8)
    labels, start = [], 0
    for (x_name, y_name), count in zip(STL_PARTS[split], counts):
        _read_stl_images(found[x_name], images[start : start + count])
        labels.append(_read_stl_labels(found.get(y_name), count))
        start += count
    return InMemoryImages(torch.from_numpy(images), np.concatenate(labels), "stl10", 10, IMAGENET_MEAN, IMAGENET_STD)


# ---------------------------------------------------------------------------- scikit-learn digits

DIGITS_TRAIN = 1497  # of 1797; the remaining 300 are the test split


def load_digits(split: str, data_dir: Optional[str] = None) -> InMemoryImages:
    """scikit-learn's 8x8 digits (bundled with it; ``data_dir`` is ignored).

    A fixed permutation (seed 0) gives 1497 train and 300 test images.
    Normalisation stats are computed from the training split.
    """
    check_split("digits", split, ("train", "test"))
    from sklearn.datasets import (
        load_digits as sklearn_digits,  # imported lazily: sklearn is slow to import
    )

    digits = sklearn_digits()
    images = np.rint(digits.images * (255.0 / 16.0)).astype(np.uint8)[:, None]  # 0..16 -> 0..255
    order = np.random.default_rng(0).permutation(len(images))
    train_idx, test_idx = order[:DIGITS_TRAIN], order[DIGITS_TRAIN:]
    train_pixels = images[train_idx].astype(np.float64) / 255.0
    mean, std = (float(train_pixels.mean()),), (float(train_pixels.std()),)
    idx = train_idx if split == "train" else test_idx
    return InMemoryImages(
        torch.from_numpy(np.ascontiguousarray(images[idx])), digits.target[idx], "digits", 10, mean, std
    )


# ---------------------------------------------------------------------------- image folders

_EXTS = " ".join(e.lstrip(".") for e in IMAGE_EXTENSIONS)
IMAGEFOLDER_HOW = (
    "pass --data-dir / data.data_dir= pointing to a directory laid out as <dir>/train/<class>/<image> and "
    f"<dir>/test/<class>/<image> (or val/), with images of type {_EXTS}; "
    "for unlabelled images use dataset 'folder'"
)
FOLDER_HOW = (
    f"pass --data-dir / data.data_dir= pointing to a directory containing images ({_EXTS}), "
    "searched recursively"
)


def _split_candidates(root: str, split: str) -> list[str]:
    """Where ``split`` may live: train/, or for "test" test/ and then val/."""
    names = ("train",) if split == "train" else ("test", "val")
    return [os.path.join(root, n) for n in names]


def _find_split_dir(root: str, split: str) -> Optional[str]:
    return next((p for p in _split_candidates(root, split) if os.path.isdir(p)), None)


def _class_names(split_dirs: list[str]) -> list[str]:
    """Sorted union of class directories over all splits, so every split maps a class to one index."""
    names = {
        entry.name
        for d in split_dirs
        for entry in os.scandir(d)
        if entry.is_dir() and not entry.name.startswith(".")
    }
    return sorted(names)


def _labelled_images(split_dir: str, classes: list[str]) -> tuple[list[str], list[int]]:
    """Image paths under ``split_dir/<class>/`` (recursive) and their class indices."""
    paths: list[str] = []
    labels: list[int] = []
    for label, cls in enumerate(classes):
        class_dir = os.path.join(split_dir, cls)
        found = list_images(class_dir) if os.path.isdir(class_dir) else []  # a class may be absent from a split
        paths += found
        labels += [label] * len(found)
    return paths, labels


def load_imagefolder(split: str, data_dir: Optional[str] = None) -> ImageFiles:
    """Labelled images under ``data_dir/<split>/<class>/``; classes sorted alphabetically.

    Splits "train" and "test" (``val/`` serves as the test split when ``test/`` is absent).
    """
    check_split("imagefolder", split, ("train", "test"))
    root = require_dir("imagefolder", data_dir, IMAGEFOLDER_HOW)
    split_dir = _find_split_dir(root, split)
    if split_dir is None:
        searched = [(p, "does not exist") for p in _split_candidates(root, split)]
        raise not_found("imagefolder", f"split {split!r}", searched, IMAGEFOLDER_HOW)
    # Classes come from both splits (when the other exists) so each class has one index everywhere.
    other_dir = _find_split_dir(root, "test" if split == "train" else "train")
    classes = _class_names([d for d in (split_dir, other_dir) if d])
    paths, labels = _labelled_images(split_dir, classes)
    if not paths:
        why = "no images in class subdirectories"
        raise not_found("imagefolder", f"images for split {split!r}", [(split_dir, why)], IMAGEFOLDER_HOW)
    return ImageFiles(paths, labels, "imagefolder", len(classes), classes=classes)


def load_folder(split: str, data_dir: Optional[str] = None) -> ImageFiles:
    """Unlabelled images anywhere under ``data_dir`` (labels -1); split "train" only."""
    if split == "test":
        raise ValueError(
            "dataset 'folder' is unlabelled, so it has no labelled 'test' split; the kNN monitor needs "
            "data.eval_split=\"\" (to disable it) or a labelled dataset such as 'imagefolder'"
        )
    check_split("folder", split, ("train",))
    root = require_dir("folder", data_dir, FOLDER_HOW)
    paths = list_images(root)
    if not paths:
        raise not_found("folder", "images", [(root, "contains no images, searched recursively")], FOLDER_HOW)
    return ImageFiles(paths, [-1] * len(paths), "folder", 0)


# ---------------------------------------------------------------------------- registry

DATASETS: dict[str, Callable[[str, Optional[str]], Dataset]] = {
    "fmnist": load_fmnist,
    "cifar10": load_cifar10,
    "cifar100": load_cifar100,
    "stl10": load_stl10,
    "digits": load_digits,
    "imagefolder": load_imagefolder,
    "folder": load_folder,
    "tinyimagenet": load_tinyimagenet,
    "shards": load_shards,  # WebDataset shards written by `simsiam pack`, streamed (train split only)
}


def load_dataset(name: str, split: str, data_dir: Optional[str] = None) -> Dataset:
    """Load split ``split`` of dataset ``name`` (a key of ``DATASETS``).

    Raises ValueError for an unknown dataset or split, DatasetNotFound when the
    files are missing (the message lists where it looked and how to get them),
    and ValueError when a file is malformed.
    """
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose one of: {', '.join(sorted(DATASETS))}")
    return DATASETS[name](split, data_dir)
