"""A folder's image files, their bytes as they are on disk, packed into one file read through one memory map.

A folder too large for the decoded-image cache (``cache.py``) used to go back to the per-image
pipeline: every image opened, read and decoded by PIL in a DataLoader worker, every epoch. Here
its encoded bytes -- no re-encoding, so nothing is lost and the file is as large as the folder --
are copied once into ``<stem>.bin`` beside the decoded caches, with an index ``<stem>.json``: each
image's offset, length and crc32, its label and its path. A batch is then read with one sorted
pass over the mapping (no file opened per image) and decoded in one call (``encoded_decode.py``;
on the GPU when training there).

The store's name comes from the file list (names and labels), as the cache's does: another folder,
or files added or removed, is another store. Its index records the sources' fingerprint, checked
at every open (``cache_check.sources_fingerprint``: a file rewritten in place packs the folder
again, once) and the data file's length. Unlike the decoded cache, the data file is not checksummed
whole at open: a folder over ``data.cache_max_gb`` decoded is tens of GB encoded, minutes to read.
Each image's bytes are checked against their crc32 the first time a run reads them instead, and an
image whose bytes changed is skipped with a line naming it. Once a run, not every epoch: the crc32
of a batch of 256 ImageNet-sized JPEGs (28 MB) took 40 ms on this busy machine, about what nvJPEG
needs to decode them; what the check is for -- a store damaged or overwritten between runs -- is
seen on the first read. Written like the cache: the data file through a temporary file and
renamed, the index last, so a half-written store is never taken for a whole one; a stop signal
during the packing removes the temporary file. Files that cannot be read are reported and left out.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import zlib
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset
from tqdm import tqdm

from ..parallel import distributed as dist
from . import cache_check
from .cache import _stop_signals_end_the_decode, _write_index, images_root  # as the cache writes and stops
from .cache_check import MISSING, sources_fingerprint
from .decode import decode_image
from .encoded_decode import decoder_unavailable
from .errors import UnreadableImage
from .files import ImageFiles
from .names import name_bytes

FORMAT = 1  # the index's layout; in the store's name too, so an older store is never looked at


def store_key(dataset: ImageFiles) -> str:
    """Changes with any file added, removed or relabelled (the bytes do not depend on the image size
    or the channel count: one store serves every resolution)."""
    h = hashlib.sha256(f"encoded:v{FORMAT}".encode())
    for path, label in zip(dataset.paths, dataset.labels):
        h.update(name_bytes(os.path.abspath(path)) + f"\0{label}\n".encode())
    return h.hexdigest()[:24]


def store_stem(dataset: ImageFiles, root: Path) -> Path:
    return root / f"{dataset.name}-{len(dataset)}-encoded-{store_key(dataset)}"


class EncodedImages(Dataset):
    """The images of a folder as encoded bytes in one memory-mapped file.

    ``read(index)`` gives the bytes of a batch; ``__getitem__`` decodes one image as ``ImageFiles``
    does (PIL, upright), for the kNN monitor and the pictures. The mapping is opened on first use
    in each process, so a DataLoader worker that receives this dataset does not copy the file.
    """

    subset_of: Optional[dict] = None

    def __init__(self, data_path: Path, index: dict, source: ImageFiles):
        self.data_path = Path(data_path)
        self.paths = list(index["paths"])
        self.labels = [int(y) for y in index["labels"]]
        self.offsets = np.asarray(index["offsets"], dtype=np.int64)
        self.lengths = np.asarray(index["lengths"], dtype=np.int64)
        self.crc32 = np.asarray(index["crc32"], dtype=np.uint32)
        self.name, self.num_classes, self.channels = source.name, source.num_classes, source.channels
        self.mean, self.std, self.classes = source.mean, source.std, source.classes
        self.subset_of = source.subset_of
        self.image_size = 0  # variable, as the files'
        self._mode = "L" if self.channels == 1 else "RGB"
        self._data: Optional[np.ndarray] = None
        self._checked = np.zeros(len(self.paths), dtype=bool)  # bytes found whole in this process

    def __len__(self) -> int:
        return len(self.paths)

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_data": None}  # pickled without the mapping; reopened where used

    def _mapped(self) -> np.ndarray:
        if self._data is None:
            self._data = np.memmap(self.data_path, dtype=np.uint8, mode="r")
        return self._data

    def read(self, index: Sequence[int]) -> list[Optional[np.ndarray]]:
        """The bytes of images ``index``, in that order: one pass over the mapping in file order,
        each image copied out (the decoder owns it). None where the bytes fail their crc32 (checked
        on an image's first read in this process)."""
        index = np.asarray(index, dtype=np.int64)
        data = self._mapped()
        out: list[Optional[np.ndarray]] = [None] * len(index)
        for pos in np.argsort(self.offsets[index], kind="stable"):
            i = index[pos]
            start = self.offsets[i]
            blob = np.array(data[start:start + self.lengths[i]])
            if self._checked[i] or zlib.crc32(blob) == self.crc32[i]:
                self._checked[i] = True
                out[pos] = blob
        return out

    def damaged(self, i: int) -> str:
        """The line for image ``i`` whose stored bytes failed their check."""
        return (f"cannot decode image {self.paths[i]!r}: its bytes in {self.data_path} changed since they were "
                f"packed (damaged disk or an overwritten file); delete {self.data_path.with_suffix('')}.* to pack "
                "the folder again")

    def __getitem__(self, i: int) -> tuple[Image.Image, int]:
        blob = self.read([i])[0]
        if blob is None:
            raise UnreadableImage(self.paths[i], "its bytes in the encoded store changed since they were packed")
        return decode_image(blob.tobytes(), self._mode, name=self.paths[i]), self.labels[i]

    def __repr__(self) -> str:
        return f"EncodedImages(name={self.name!r}, n={len(self)}, channels={self.channels}, store={self.data_path})"


def pack(dataset: ImageFiles, data_path: Path, progress: bool = True) -> dict:
    """Copy every readable file's bytes into ``data_path`` (through a temporary file); returns the
    index without the sources' fingerprint (the caller's, taken before the copy)."""
    _check_free_space(dataset, data_path.parent)
    fd, tmp = tempfile.mkstemp(dir=data_path.parent, prefix=f".{data_path.name}.", suffix=".tmp")
    kept, offsets, lengths, crcs, unreadable = [], [], [], [], []
    offset = 0
    try:
        with os.fdopen(fd, "wb") as out, tqdm(total=len(dataset), desc=f"packing {dataset.name}", unit="img",
                                               disable=not progress) as bar:
            for i, path in enumerate(dataset.paths):
                try:
                    with open(path, "rb") as fh:
                        blob = fh.read()
                except OSError as err:
                    unreadable.append(f"{path}: {err.strerror or err}")
                    bar.update()
                    continue
                if not blob:
                    unreadable.append(f"{path}: empty file")
                    bar.update()
                    continue
                out.write(blob)
                kept.append(i)
                offsets.append(offset)
                lengths.append(len(blob))
                crcs.append(zlib.crc32(blob))
                offset += len(blob)
                bar.update()
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, data_path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return {"format": FORMAT, "bytes": offset, "paths": [dataset.paths[i] for i in kept],
            "labels": [dataset.labels[i] for i in kept], "offsets": offsets, "lengths": lengths, "crc32": crcs,
            "unreadable": unreadable}


def _check_free_space(dataset: ImageFiles, root: Path) -> None:
    """Refuse, in one line, a store the disk cannot hold: found out after hours of copying, a full
    disk would also leave the other programs writing there without space."""
    need = 0
    for path in dataset.paths:
        try:
            need += os.path.getsize(path)
        except OSError:
            pass  # unreadable: reported when its bytes are copied
    free = shutil.disk_usage(root).free
    if need > free:
        raise ValueError(f"the encoded-image store of {dataset.name} needs {need / 2**20:.0f} MiB in {root}, which has "
                         f"{free / 2**20:.0f} MiB free: free space there, point data.cache_dir (or SIMSIAM_CACHE_DIR) "
                         "at another disk, or set data.pipeline=per_image to read the files as they are")


def read_index(index_path: Path) -> tuple[Optional[dict], str]:
    """``(index, "")`` or ``(None, why)``, ``why`` the rest of a sentence that starts with the store's name:
    read as the cache's index is, checked by this store's own :func:`_malformed`."""
    return cache_check.read_index(index_path, _malformed)


def _malformed(index) -> str:
    if not isinstance(index, dict) or index.get("format") != FORMAT:
        return f"not a format-{FORMAT} index"
    columns = ("paths", "labels", "offsets", "lengths", "crc32")
    if not all(isinstance(index.get(k), list) for k in columns) or not isinstance(index.get("sources"), str):
        return "missing columns"
    if len({len(index[k]) for k in columns}) != 1:
        return "its columns differ in length"
    if not all(isinstance(v, int) for k in columns[1:] for v in index[k]) or not isinstance(index.get("bytes"), int):
        return "numbers that are not integers"
    ends = np.asarray(index["offsets"], dtype=np.int64) + np.asarray(index["lengths"], dtype=np.int64)
    if len(ends) and (min(index["offsets"]) < 0 or min(index["lengths"]) <= 0 or ends.max() > index["bytes"]):
        return "offsets outside its data file"
    return ""


def problem(index_path: Path, data_path: Path, sources: str) -> tuple[Optional[dict], str]:
    """``(index, "")`` when the store can be used, else ``(None, why)``."""
    index, why = read_index(index_path)
    if index is None:
        return None, why
    if index["sources"] != sources:
        return None, "is stale: its source images changed since they were packed"
    try:
        size = data_path.stat().st_size
    except FileNotFoundError:
        return None, "has lost its data file"
    if size != index["bytes"]:
        return None, f"is {size} bytes long where {index['bytes']} were written (truncated or overwritten)"
    return index, ""


def stored(dataset: ImageFiles, root: Path, *, log: Callable[[str], None] = print,
           warn: Optional[Callable[[str], None]] = None, progress: bool = True) -> EncodedImages:
    """``dataset``'s bytes in one store under ``root``, packed first when missing, stale or damaged
    (by rank 0 under torchrun; the others wait)."""
    warn = warn or log
    root.mkdir(parents=True, exist_ok=True)
    stem = store_stem(dataset, root)
    data_path, index_path = Path(f"{stem}.bin"), Path(f"{stem}.json")
    if dist.is_main():
        sources = sources_fingerprint(dataset.paths)
        _, why = problem(index_path, data_path, sources)
        if why:
            if why == MISSING:
                log(f"packing the bytes of {len(dataset)} images of {dataset.name} once into {data_path}")
            else:
                warn(f"the encoded-image store {data_path} {why}: packing its {len(dataset)} images again")
            with _stop_signals_end_the_decode(f"{len(dataset)} images of {dataset.name}"):
                index = pack(dataset, data_path, progress)
                index["sources"] = sources
                _write_index(index, index_path)
            if index["unreadable"]:
                warn(f"left out {len(index['unreadable'])} unreadable file(s), e.g. {index['unreadable'][:3]}")
    dist.barrier()
    index, why = read_index(index_path)
    if index is None:
        raise ValueError(f"the encoded-image store {data_path} {why}; run again (it is packed anew) or set "
                         "data.pipeline=per_image")
    if not index["paths"]:
        raise ValueError(f"none of the {len(dataset)} files of {dataset.name} could be read, e.g. "
                         f"{index['unreadable'][:2]}; check the files under data.data_dir")
    return EncodedImages(data_path, index, dataset)


def encoded_if_configured(dataset, d, device, log: Callable[[str], None] = print,
                          warn: Optional[Callable[[str], None]] = None, progress: bool = True):
    """The training set the run should use: a folder's bytes in an encoded-image store when the run
    takes the encoded pipeline -- ``data.pipeline=encoded``, or ``auto`` for a folder the decoded
    cache did not take (over ``data.cache_max_gb``) where torchvision decodes JPEGs --; else ``dataset``."""
    if not isinstance(dataset, ImageFiles) or d.pipeline not in ("auto", "encoded"):
        return dataset
    if d.pipeline == "auto" and not (d.cache and d.image_size):
        return dataset  # data.cache=false asks for the files read as they are; no size: the per-image default
    if not d.image_size:
        raise ValueError("data.pipeline=encoded needs data.image_size (the views' size, e.g. 224)")
    why = decoder_unavailable()
    if why:
        if d.pipeline == "encoded":
            raise ValueError(f"data.pipeline=encoded needs torchvision's JPEG decoder, which fails here ({why}); "
                             "use data.pipeline=per_image (or auto)")
        log(f"{dataset.name}: torchvision cannot decode JPEGs here ({why}); training reads the files "
            "(per-image pipeline)")
        return dataset
    store = stored(dataset, images_root(d), log=log, warn=warn, progress=progress)
    log(f"{dataset.name}: the bytes of {len(store)} images memory-mapped from {store.data_path} "
        f"({store.data_path.stat().st_size / 2**20:.0f} MiB); encoded pipeline: decoded in batches by torchvision "
        f"on {torch.device(device).type}")
    return store
