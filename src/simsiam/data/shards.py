"""Image folders as WebDataset shards: ``simsiam pack`` writes them, ``data.dataset=shards`` reads them.

A folder of shards (``shard-000000.tar``, ...) holds each image as ``<key>.<ext>`` (the file's own
bytes, not re-encoded) next to ``<key>.cls`` (its class index as text), and ``shards.json``: the
class names and how many images each shard holds. The counts let every DDP rank and DataLoader
worker know, before reading a byte, which images are its own in an epoch (``shard_stream.py``).

Packing draws the images in a seeded random order, so that each shard -- and so each stretch of
the stream a worker reads -- mixes all classes instead of holding one.

The tar files are written by the ``webdataset`` library and read by its indexed tar reader
(``wids``, from the same project) or, where that is missing or a shard is damaged, by its
streaming reader (optional extras, ``requirements-extras.txt``). Every file is written under a
temporary name and renamed, the index last: a folder with ``shards.json`` is complete.
"""
from __future__ import annotations

import contextlib
import io
import itertools
import json
import os
import random
import tarfile
import tempfile
from pathlib import Path
from typing import Callable, Iterator, Optional

from .errors import DatasetNotFound
from .files import IMAGENET_MEAN, IMAGENET_STD, list_images

INDEX_NAME = "shards.json"
FORMAT = "simsiam-shards-1"
# Tiny-ImageNet's 64 px JPEGs: ~13 MB a shard. Camera photos (~3 MB each) want --per-shard 100-300,
# shards of a few hundred MB, the size WebDataset's authors recommend for streaming.
IMAGES_PER_SHARD = 5000
PACK_SEED = 0
INSTALL = "pip install webdataset==1.0.2 (pinned in requirements-extras.txt)"
WIDS = "wids==0.1.11"  # WebDataset's indexed tar reader, pinned in requirements-extras.txt


def webdataset():
    """The ``webdataset`` module, or one line saying how to install it."""
    try:
        import webdataset as wds
    except ImportError:
        raise ValueError(f"WebDataset shards (simsiam pack, data.dataset=shards) need the webdataset package: "
                         f"{INSTALL}") from None
    return wds


def shard_name(i: int) -> str:
    return f"shard-{i:06d}.tar"


def labelled_files(folder: str) -> tuple[list[str], list[int], list[str]]:
    """Images under ``folder/<class>/`` (recursive) with their class indices, classes sorted; a folder
    without class sub-folders gives its images unlabelled (-1)."""
    classes = sorted(e.name for e in os.scandir(folder) if e.is_dir() and not e.name.startswith("."))
    paths, labels = [], []
    for index, name in enumerate(classes):
        found = list_images(os.path.join(folder, name))
        paths += found
        labels += [index] * len(found)
    if not classes:
        paths = list_images(folder)
        labels = [-1] * len(paths)
    return paths, labels, classes


def _suffix(path: str) -> str:
    ext = os.path.splitext(path)[1].lower().lstrip(".")
    return "jpg" if ext == "jpeg" else ext


def _write_shard(wds, path: Path, members: list[tuple[int, str, int]]) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        with open(tmp, "wb") as fh, wds.TarWriter(fh, encoder=False, mtime=0) as sink:
            for key, src, label in members:
                with open(src, "rb") as img:
                    # Keys carry no dot: WebDataset splits a member's name into key and type at the first one.
                    sink.write({"__key__": f"{key:09d}", _suffix(src): img.read(), "cls": str(label).encode()})
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def pack(folder: str, out: str, per_shard: int = IMAGES_PER_SHARD, progress: bool = True,
         log: Callable[[str], None] = print) -> dict:
    """Write the images of ``folder`` as shards into ``out`` (which must not hold shards yet); returns the index."""
    wds = webdataset()
    from tqdm import tqdm

    if not os.path.isdir(folder):
        raise DatasetNotFound(f"{folder} is not a directory; give the folder of images "
                              "(class sub-folders give the labels)")
    target = Path(out)
    if (target / INDEX_NAME).exists():
        raise FileExistsError(f"{target} already holds shards ({INDEX_NAME}); choose another --out or remove it")
    paths, labels, classes = labelled_files(folder)
    if not paths:
        raise DatasetNotFound(f"no images under {folder} (searched recursively)")
    if per_shard < 1:
        raise ValueError(f"--per-shard must be at least 1, got {per_shard}")
    target.mkdir(parents=True, exist_ok=True)
    order = list(range(len(paths)))
    random.Random(PACK_SEED).shuffle(order)
    shards = []
    bar = tqdm(total=len(paths), desc=f"packing {folder}", unit="img", disable=not progress)
    for s, start in enumerate(range(0, len(order), per_shard)):
        members = [(k, paths[k], labels[k]) for k in order[start:start + per_shard]]
        _write_shard(wds, target / shard_name(s), members)
        shards.append({"name": shard_name(s), "images": len(members)})
        bar.update(len(members))
    bar.close()
    index = {"format": FORMAT, "images": len(paths), "classes": classes, "shards": shards,
             "source": os.path.abspath(folder)}
    fd, tmp = tempfile.mkstemp(dir=target, prefix=f".{INDEX_NAME}.", suffix=".tmp")
    with os.fdopen(fd, "w") as fh:
        json.dump(index, fh, indent=1)
    os.replace(tmp, target / INDEX_NAME)  # last: its presence says every shard is complete
    log(f"packed {len(paths)} images of {len(classes)} classes into {len(shards)} shard(s) in {target}")
    return index


class ShardedImages:
    """Training images streamed from shards: what a run needs to know before reading them (how many,
    which classes, channels and normalisation), not the images. No random access: the streaming
    loader (``loaders.ShardViewLoader``) is the one path that reads it."""

    subset_of: Optional[dict] = None
    image_size = 0  # variable: each file has its own size

    def __init__(self, root: str, shards: list[dict], classes: list[str], name: str = "shards"):
        self.root = root
        self.shard_paths = [os.path.join(root, s["name"]) for s in shards]
        self.shard_sizes = [int(s["images"]) for s in shards]
        self.classes = list(classes)
        self.num_classes = len(classes)
        self.name = name
        self.channels = 3
        self.mean, self.std = IMAGENET_MEAN, IMAGENET_STD

    def __len__(self) -> int:
        return sum(self.shard_sizes)

    @property
    def labels(self):
        # What a class-stratified subset (data/subset.py) would read first: known only by reading every shard.
        raise ValueError("data.train_limit cannot take a subset of streamed shards; pack a smaller folder with "
                         "simsiam pack, or set data.train_limit=0")

    def __repr__(self) -> str:
        return f"ShardedImages({self.root!r}, {len(self)} images in {len(self.shard_paths)} shards)"


SHARDS_HOW = ("write shards with `simsiam pack FOLDER --out SHARDS/` and pass data.data_dir=SHARDS/ "
              "(--data-dir)")


def load_shards(split: str, data_dir: Optional[str] = None) -> ShardedImages:
    """The shards in ``data_dir`` (split "train" only: they are streamed, not indexed)."""
    if split != "train":
        raise ValueError("dataset 'shards' streams training images only and has no labelled "
                         f"{split!r} split for the kNN monitor; set data.eval_split=\"\"")
    if not data_dir:
        raise DatasetNotFound(f"dataset 'shards' needs its folder: {SHARDS_HOW}", "shards")
    index_path = Path(os.path.expanduser(data_dir)) / INDEX_NAME
    if not index_path.is_file():
        raise DatasetNotFound(f"dataset 'shards': {index_path} does not exist; {SHARDS_HOW}", "shards",
                              [str(index_path)])
    try:
        index = json.loads(index_path.read_text())
        assert index.get("format") == FORMAT and isinstance(index["shards"], list)
    except (ValueError, AssertionError, KeyError, TypeError):
        raise ValueError(f"{index_path} is not an index written by simsiam pack; pack the folder again") from None
    webdataset()  # fail before training starts when the reader is missing
    return ShardedImages(str(index_path.parent), index["shards"], index.get("classes", []))


def read_shard(path: str, on_error: Callable[[Exception], bool], first: int = 0) -> Iterator[dict]:
    """The samples of one shard in stored order (``{"__key__", "jpg", "cls", ...}``) from its
    ``first`` on. A whole shard is read through WebDataset's memory-mapped tar index (``wids``);
    one that the index refuses (damaged, not a tar) or where ``wids`` is missing, by WebDataset's
    streaming tar reader, which reads what it can and hands each error to ``on_error`` (which
    returns True to go on)."""
    wds = webdataset()
    tar = _indexed_tar(path)
    if tar is None:
        return itertools.islice(wds.tarfile_samples([{"url": path}], handler=on_error), first, None)
    return _indexed_samples(tar, path, first, wds.tariterators.base_plus_ext)


def shard_reader() -> str:
    """How the shards will be read, for the run's first lines: a user without ``wids`` learns what
    makes the reading faster."""
    if _indexed_tar_class() is None:
        return f"by WebDataset's streaming tar reader (faster: pip install {WIDS})"
    return "through their tar index (wids)"


def _indexed_tar_class():
    """``wids``' MMIndexedTar, or None where ``wids`` is not installed."""
    try:
        from wids.wids_mmtar import MMIndexedTar
    except ImportError:
        return None
    return MMIndexedTar


def _indexed_tar(path: str):
    """``wids``' index of the tar at ``path`` (each member's name, offset and size, from one walk
    over the headers of the memory-mapped file), or None where ``wids`` is not installed or the
    file is not a tar it indexes whole. Why: the streaming reader parses each header in Python's
    ``tarfile``, some 56 us a sample on Tiny-ImageNet's shards against 2.4 here
    (docs/PERFORMANCE.md), and on 2 cores that reading competes with the training step."""
    MMIndexedTar = _indexed_tar_class()
    if MMIndexedTar is None:
        return None
    try:
        with open(path, "rb") as fh:  # the first header's checksum: random bytes are not taken for a tar
            tarfile.TarInfo.frombuf(fh.read(tarfile.BLOCKSIZE), "utf-8", "surrogateescape")
        with contextlib.redirect_stdout(io.StringIO()):  # wids prints a header it cannot parse; it also raises
            tar = MMIndexedTar(path, verbose=False)
    except Exception:
        return None
    if tar.by_index:  # whole: the last member's padded data, then the zero block that ends an archive
        _, offset, size = tar.by_index[-1]
        end = offset + tarfile.BLOCKSIZE + -(-size // tarfile.BLOCKSIZE) * tarfile.BLOCKSIZE
        if tar.mmapped_file[end:end + tarfile.BLOCKSIZE] != bytes(tarfile.BLOCKSIZE):
            tar.close()
            return None
    return tar


def _indexed_samples(tar, path: str, first: int, split_name: Callable) -> Iterator[dict]:
    """The members of an indexed tar grouped into samples by key (WebDataset's rule: the name up to
    the first dot of its base name), the ones before ``first`` counted but not copied."""
    try:
        position, key, sample = -1, None, None
        for name, offset, size in tar.by_index:
            prefix, suffix = split_name(name)
            if prefix is None:
                continue
            if prefix != key:
                if sample:
                    yield sample
                key, position = prefix, position + 1
                sample = {"__key__": prefix, "__url__": path} if position >= first else None
            if sample is not None:
                start = offset + tarfile.BLOCKSIZE
                sample[suffix.lower()] = tar.mmapped_file[start:start + size]
        if sample:
            yield sample
    finally:
        tar.close()
