"""Builders of tiny datasets in the real on-disk formats, for the data tests.

Each builder writes under a given directory and returns the arrays it wrote,
so a test can compare what a loader reads back with the ground truth.
"""

from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path

import numpy as np
from PIL import Image

IDX_CODES = {np.dtype(np.uint8): 0x08, np.dtype(np.int8): 0x09, np.dtype(">i2"): 0x0B, np.dtype(">i4"): 0x0C,
             np.dtype(">f4"): 0x0D, np.dtype(">f8"): 0x0E}


def idx_bytes(array: np.ndarray) -> bytes:
    """Serialise ``array`` as an IDX file (big-endian values, header with its dimensions)."""
    stored = array.astype(array.dtype.newbyteorder(">")) if array.dtype.itemsize > 1 else array
    code = IDX_CODES[np.dtype(stored.dtype)]
    header = struct.pack(">HBB", 0, code, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + stored.tobytes()


def write_idx(path: Path, array: np.ndarray, gz: bool = True) -> Path:
    """Write ``array`` as IDX to ``path`` (gzipped when ``gz``); returns the path."""
    data = idx_bytes(array)
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def make_fmnist(directory: Path, n_train: int = 12, n_test: int = 6, gz: bool = True, seed: int = 0) -> dict:
    """Write the four Fashion-MNIST IDX files into ``directory``; return {split: (images, labels)}."""
    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True, exist_ok=True)
    suffix = ".gz" if gz else ""
    out = {}
    for split, prefix, n in (("train", "train", n_train), ("test", "t10k", n_test)):
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, size=n, dtype=np.uint8)
        write_idx(directory / f"{prefix}-images-idx3-ubyte{suffix}", images, gz)
        write_idx(directory / f"{prefix}-labels-idx1-ubyte{suffix}", labels, gz)
        out[split] = (images, labels)
    return out


def _write_pickle(path: Path, obj: dict) -> None:
    # Protocol 2 is what the original (Python 2) CIFAR files use.
    with open(path, "wb") as fh:
        pickle.dump(obj, fh, protocol=2)


def make_cifar10(root: Path, per_batch: int = 3, seed: int = 0) -> dict:
    """Write root/cifar-10-batches-py/{data_batch_1..5,test_batch}; return {split: (images NCHW, labels)}."""
    rng = np.random.default_rng(seed)
    directory = root / "cifar-10-batches-py"
    directory.mkdir(parents=True, exist_ok=True)
    names = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}
    out = {}
    for split, files in names.items():
        parts = []
        for name in files:
            data = rng.integers(0, 256, size=(per_batch, 3072), dtype=np.uint8)
            labels = [int(v) for v in rng.integers(0, 10, size=per_batch)]
            _write_pickle(directory / name, {b"batch_label": name.encode(), b"labels": labels, b"data": data,
                                             b"filenames": [b"x.png"] * per_batch})
            parts.append((data, labels))
        images = np.concatenate([d for d, _ in parts]).reshape(-1, 3, 32, 32)
        out[split] = (images, np.concatenate([np.asarray(l) for _, l in parts]))
    return out


def make_cifar100(root: Path, n: int = 5, seed: int = 0) -> dict:
    """Write root/cifar-100-python/{train,test}; return {split: (images NCHW, fine labels)}."""
    rng = np.random.default_rng(seed)
    directory = root / "cifar-100-python"
    directory.mkdir(parents=True, exist_ok=True)
    out = {}
    for split in ("train", "test"):
        data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
        fine = [int(v) for v in rng.integers(0, 100, size=n)]
        coarse = [v // 5 for v in fine]
        _write_pickle(directory / split, {b"data": data, b"fine_labels": fine, b"coarse_labels": coarse})
        out[split] = (data.reshape(-1, 3, 32, 32), np.asarray(fine))
    return out


def stl_bytes(images: np.ndarray) -> bytes:
    """STL-10 stores each (3, 96, 96) image with every channel column-major."""
    return np.ascontiguousarray(images.transpose(0, 1, 3, 2)).tobytes()


def make_stl10(root: Path, n_train: int = 3, n_test: int = 2, n_unlabeled: int = 4, seed: int = 0) -> dict:
    """Write root/stl10_binary/*.bin; return {part: (images NCHW, labels 0..9 or None)}."""
    rng = np.random.default_rng(seed)
    directory = root / "stl10_binary"
    directory.mkdir(parents=True, exist_ok=True)
    out = {}
    for part, n in (("train", n_train), ("test", n_test), ("unlabeled", n_unlabeled)):
        images = rng.integers(0, 256, size=(n, 3, 96, 96), dtype=np.uint8)
        (directory / f"{part}_X.bin").write_bytes(stl_bytes(images))
        labels = None
        if part != "unlabeled":
            labels = rng.integers(0, 10, size=n)
            (directory / f"{part}_y.bin").write_bytes((labels + 1).astype(np.uint8).tobytes())  # stored 1..10
        out[part] = (images, labels)
    return out


def save_image(path: Path, size: tuple[int, int] = (20, 16), seed: int = 0, mode: str = "RGB") -> Path:
    """Save a random image (format from the suffix) at ``path``, creating parents."""
    rng = np.random.default_rng(seed)
    shape = (size[1], size[0], 3) if mode == "RGB" else (size[1], size[0])
    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.fromarray(rng.integers(0, 256, size=shape, dtype=np.uint8))
    img.convert(mode).save(path)
    return path


def make_imagefolder(root: Path) -> dict:
    """A labelled folder: train/{cat,dog}, test/{cat,dog,eel} with PNG/JPEG/BMP (some nested, upper case).

    Returns {split: sorted list of (relative path, class name)} of the images written.
    """
    layout = {
        "train": {"dog": ["d1.png", "d2.JPG"], "cat": ["c1.jpeg", "sub/c2.png", "c3.bmp"]},
        "test": {"dog": ["d3.png"], "cat": ["c4.png"], "eel": ["e1.png"]},
    }
    out = {}
    for split, classes in layout.items():
        out[split] = []
        for cls, files in classes.items():
            for i, name in enumerate(files):
                save_image(root / split / cls / name, seed=i)
                out[split].append((f"{split}/{cls}/{name}", cls))
        (root / split / "dog" / "notes.txt").write_text("not an image")
    return out


def write_truncated_jpeg(path: Path) -> Path:
    """A JPEG cut off halfway: opens (the header is intact) but fails to decode."""
    save_image(path.with_suffix(".tmp.jpg"), size=(64, 64))
    data = path.with_suffix(".tmp.jpg").read_bytes()
    path.with_suffix(".tmp.jpg").unlink()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data[: len(data) // 2])
    return path


def write_fake_png(path: Path) -> Path:
    """A text file with an image extension."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("this is not a PNG file\n")
    return path
