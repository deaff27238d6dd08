"""A folder of image files decoded once into one uint8 array, memory-mapped on later runs.

Decoding JPEGs is the per-image pipeline's cost: it takes a core from the model on a small
machine. Decoded once -- in parallel, with a progress bar -- into ``(N, C, S, L)`` uint8, a folder
becomes an :class:`InMemoryImages` and trains on the batched tensor pipeline like CIFAR.

Storage: whole photos, aspect kept up to :data:`MAX_ASPECT`. Every image's shorter side is resized
to ``S = data.image_size`` (or ``data.cache_side``) and its longer side kept up to
``L = S * 4 // 3``, the rest of it centre-cropped (a 16:9 photo keeps its central 4:3). Each image
lies landscape in an ``S x L`` slot -- a portrait one transposed -- with its last column repeated
to the slot's edge, and the index records its upright (height, width) (``InMemoryImages.sizes``).
The batched augmentation draws each crop relative to that whole rectangle, as torchvision's
RandomResizedCrop does on the file (``BatchAugment.sample_params``), and crops a transposed image
as stored, turning the view upright. A folder whose images are all square after the resize is
stored ``(N, C, S, S)`` without sizes, exactly as before. What that costs and changes:

* the images file is at most ``L / S = 4/3`` the size of a cache of centre squares (the slots of
  the widest image kept; a folder of 4:3 photos fills them);
* a crop of area fraction ``s`` has ``sqrt(s * area)`` stored pixels a side before it is resized
  to ``image_size``: small crops of large photos are upsampled from fewer pixels than the file
  had. A larger ``data.cache_side`` buys that detail back at ``(side / image_size)^2`` the disk;
* evaluation on a cached folder sees each photo's centre square (``InMemoryImages.square_images``;
  no 224/256 margin), as the cache of centre squares gave it.

The cache's name comes from the file list (names and labels), ``S`` and the channel count: another
folder, or files added or removed, is another cache. Its index (``.json``) records a fingerprint of
the source files (size, modification time, first and last blocks) and the crc32 of the images file,
checked at every open (``cache_check.py``, with what that costs): a cache whose sources changed, or
whose files were truncated, overwritten or damaged, is decoded again in its place, with one line
naming it. Nothing is unpickled. The cache is written to temporary files and renamed, images first
and the index last, so a crash or a second run starting at once never leaves a half cache that looks
complete; a stop signal (Ctrl-C, SIGTERM) during the decode ends it at once and removes them.
Unreadable files are reported by path and left out.
"""
from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import signal
import tempfile
import threading
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, Optional

import numpy as np
import torch
import torchvision.transforms.functional as TF
from tqdm import tqdm

from ..config import DataConfig
from ..parallel import distributed as dist
from ..paths import cache_root
from .cache_check import (
    FORMAT,
    MISSING,
    file_checksum,
    problem,
    read_index,
    sources_fingerprint,
)
from .decode import decode_image
from .errors import DecodeInterrupted, UnreadableImage
from .files import ImageFiles
from .memory import InMemoryImages
from .names import name_bytes

# The longest stored side, as a ratio to the shorter: 4:3 is what most cameras and phones take (and
# most of ImageNet); a wider photo keeps its central 4:3, as a longer bound would cost every image.
MAX_ASPECT = (4, 3)
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1)  # those train/stop.py stops a run on


def decoded_if_configured(dataset, d: DataConfig, log: Callable[[str], None] = print,
                          warn: Optional[Callable[[str], None]] = None, progress: bool = True):
    """The dataset the run should use: a files dataset decoded into the cache when ``data.cache`` is on,
    an image size is set and the pipeline is not the per-image reference; else ``dataset`` itself."""
    if not (d.cache and isinstance(dataset, ImageFiles) and d.image_size and d.pipeline != "per_image"):
        return dataset
    return cached(dataset, d.cache_side or d.image_size, images_root(d), max_bytes=d.cache_max_gb * 2**30, log=log,
                  warn=warn, progress=progress) or dataset


def images_root(d: DataConfig) -> Path:
    """Where decoded caches (and encoded-image stores, ``encoded_store.py``) live."""
    return Path(os.path.expanduser(d.cache_dir)) if d.cache_dir else cache_root() / "images"


def cache_key(dataset: ImageFiles, side: int) -> str:
    """Changes with any file added, removed or relabelled, and with the storage resolution. A file
    rewritten in place keeps the key: the index's fingerprint finds it, and the cache is redone."""
    # "upright": images decoded with their EXIF orientation applied (data/decode.py); older caches
    # hold them as stored, sideways for many phone photos, and are not found (decoded again once).
    # "whole": images kept whole up to MAX_ASPECT; older caches hold centre squares (decoded again once).
    h = hashlib.sha256(f"{side}:{dataset.channels}:v{FORMAT}:upright:whole{MAX_ASPECT[0]}x{MAX_ASPECT[1]}".encode())
    for path, label in zip(dataset.paths, dataset.labels):
        # Absolute: the same folder named from another directory (or as ./x and x) is the same cache.
        # As bytes: a name that is not UTF-8 is hashed as the file system has it.
        h.update(name_bytes(os.path.abspath(path)) + f"\0{label}\n".encode())
    return h.hexdigest()[:24]


def slot_width(side: int) -> int:
    """The longest side kept for a shorter side of ``side``: the width of every image's slot."""
    return side * MAX_ASPECT[0] // MAX_ASPECT[1]


def stored_pixels(source, side: int, channels: int, name: str = "") -> tuple[np.ndarray, tuple[int, int]]:
    """One image file (a path, or its bytes named ``name``) as the cache stores it: (pixels (C, side,
    long) landscape -- a portrait image transposed --, upright (h, w)). Raises
    :class:`UnreadableImage`."""
    img = decode_image(source, "L" if channels == 1 else "RGB", side, name=name)  # upright, shorter side at ``side``
    longest = slot_width(side)
    if max(img.size) > longest:
        img = TF.center_crop(img, [min(img.height, longest), min(img.width, longest)])
    pixels = np.asarray(img, dtype=np.uint8)
    pixels = pixels[None] if channels == 1 else pixels.transpose(2, 0, 1)
    upright = (img.height, img.width)
    return (pixels.transpose(0, 2, 1) if img.height > img.width else pixels), upright


def fill_slot(slot: np.ndarray, pixels: np.ndarray) -> None:
    """``pixels`` (C, side, long) into the top-left of ``slot`` (C, side, width >= long), its last
    column repeated to the slot's edge: a crop's bilinear edge reads it."""
    long = pixels.shape[2]
    slot[:, :, :long] = pixels
    slot[:, :, long:] = pixels[:, :, -1:]


def decode_chunk(n: int, workers: int) -> int:
    """Images handed to a decode process at a time: up to 64 (fewer round trips on a large folder),
    but at least 8 chunks a process, so that a small folder of large photos ends with every
    process busy to the last few images (202 camera photos in chunks of 64 left one of two
    processes idle for the last third) and the progress bar moves from the start."""
    return max(1, min(64, n // (8 * max(1, workers))))


def _decode_one(job: tuple[str, int, int]) -> tuple[Optional[np.ndarray], tuple[int, int], str]:
    """:func:`stored_pixels` + "", or (None, (0, 0), why)."""
    path, side, channels = job
    try:
        return (*stored_pixels(path, side, channels), "")
    except UnreadableImage as err:
        return None, (0, 0), str(err)


def _decode_many(jobs: list[tuple[str, int, int]]) -> list:
    return [_decode_one(job) for job in jobs]


def _quiet_worker() -> None:
    """A decoding process: Ctrl-C (sent to the terminal's whole process group) is the parent's to
    handle -- it ends the workers; a worker's own KeyboardInterrupt would print a traceback each."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    for sig in STOP_SIGNALS[1:]:
        signal.signal(sig, signal.SIG_DFL)  # the parent's raising handler is not for a worker


def _stop_workers(pool: ProcessPoolExecutor) -> None:
    """End the pool's processes now. ``shutdown()`` alone lets each finish the images already handed
    to it (up to 64 a chunk), seconds for large photos, and the interpreter waits for them at exit."""
    if hasattr(pool, "terminate_workers"):  # Python 3.14
        pool.terminate_workers()
        return
    for process in list((getattr(pool, "_processes", None) or {}).values()):
        process.terminate()
    pool.shutdown(wait=False, cancel_futures=True)


@contextmanager
def _stop_signals_end_the_decode(what: str) -> Iterator[None]:
    """While a folder is decoded, a stop signal raises :class:`DecodeInterrupted` at once: there is
    nothing to checkpoint yet, and a decode can take many minutes. (Inside ``pretrain`` its handlers
    would only set a flag, read after the first step: after the whole decode.) Further signals are
    ignored until the partial files are removed. Ignored signals (``nohup``) stay ignored; off the
    main thread, where handlers cannot be set, nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []

    def on_signal(signum, frame):
        if not received:
            received.append(signum)
            raise DecodeInterrupted(signum, what)

    previous = {}
    for sig in STOP_SIGNALS:
        if signal.getsignal(sig) is not signal.SIG_IGN:
            previous[sig] = signal.signal(sig, on_signal)
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)


def build(dataset: ImageFiles, side: int, images_path: Path, workers: int, progress: bool = True) -> dict:
    """Decode every file into ``images_path`` (a .npy written through a temporary file); returns the
    index: labels and paths of the images kept, their upright sizes (when not all ``side`` square),
    the unreadable ones with why, and the images file's checksum (the sources' fingerprint is the
    caller's, taken before the decode)."""
    n, c, longest = len(dataset), dataset.channels, slot_width(side)
    fd, tmp = tempfile.mkstemp(dir=images_path.parent, prefix=f".{images_path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(n, c, side, longest))
        _reserve_disk(tmp, images_path.parent)
        kept, unreadable, sizes = [], [], []
        jobs = [(p, side, c) for p in dataset.paths]
        with tqdm(total=n, desc=f"decoding {dataset.name} at {side}px", unit="img", disable=not progress) as bar, \
                ProcessPoolExecutor(max_workers=workers, initializer=_quiet_worker) as pool:
            try:
                # Chunks submitted one by one rather than through ``pool.map``: map's iterator cancels
                # the pending futures when an interrupt passes through it, and Python 3.11's pool
                # then raises InvalidStateError in its own thread as it fails those same futures
                # (a traceback under the interrupted command's line; with smaller chunks, often).
                size = decode_chunk(n, workers)
                chunks = [pool.submit(_decode_many, jobs[at:at + size]) for at in range(0, n, size)]
                results = (result for chunk in chunks for result in chunk.result())
                for i, (pixels, upright, why) in enumerate(results):
                    if pixels is None:
                        unreadable.append(why)
                    else:
                        fill_slot(out[len(kept)], pixels)
                        kept.append(i)
                        sizes.append(upright)
                    bar.update()
            except BaseException:
                _stop_workers(pool)
                raise
        out.flush()
        del out
        # The slots as wide as the widest image kept: side x side for a folder of squares, as before.
        width = max((max(hw) for hw in sizes), default=side)
        if len(kept) < n or width < longest:  # rewrite without the unreadable files' gaps and the unused width
            _copy_trimmed(tmp, tmp + ".kept.npy", len(kept), width)
            os.replace(tmp + ".kept.npy", tmp)
        checksum = file_checksum(tmp)
        os.replace(tmp, images_path)
    except BaseException:
        for leftover in (tmp, tmp + ".kept.npy"):
            if os.path.exists(leftover):
                os.unlink(leftover)
        raise
    whole = {"sizes": [list(hw) for hw in sizes]} if any(hw != (side, side) for hw in sizes) else {}
    return {"format": FORMAT, "side": side, "channels": c, "labels": [dataset.labels[i] for i in kept],
            "paths": [dataset.paths[i] for i in kept], "unreadable": unreadable, "checksum": checksum, **whole}


def _copy_trimmed(source: str, target: str, count: int, width: int) -> None:
    """The first ``count`` images of ``source`` in slots ``width`` wide, into a new .npy ``target``.
    By blocks of whole images: numpy's save of the strided slice took twice the decode itself."""
    full = np.load(source, mmap_mode="r")
    out = np.lib.format.open_memmap(target, mode="w+", dtype=np.uint8, shape=(count, *full.shape[1:3], width))
    for start in range(0, count, 1024):
        out[start:start + 1024] = full[start:min(count, start + 1024), :, :, :width]
    out.flush()
    del out, full


def _write_index(index: dict, index_path: Path) -> None:
    """The index through a temporary file, renamed last: its presence says the images file is complete."""
    fd, tmp = tempfile.mkstemp(dir=index_path.parent, prefix=f".{index_path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="ascii") as fh:
            json.dump(index, fh)  # ASCII: a file name that is not UTF-8 keeps its surrogate escapes
        os.replace(tmp, index_path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _reserve_disk(path: str, cache_dir: Path) -> None:
    """Allocate the memory-mapped file's blocks now. Without it the file is sparse, and a disk that
    fills up during decoding kills the process with SIGBUS on a page write, with no message."""
    size = os.path.getsize(path)
    try:
        with open(path, "r+b") as fh:
            os.posix_fallocate(fh.fileno(), 0, size)
    except OSError as err:
        if err.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        free = shutil.disk_usage(cache_dir).free
        raise ValueError(f"the decoded-image cache needs {size / 2**20:.0f} MiB in {cache_dir}, which has "
                         f"{free / 2**20:.0f} MiB free: free space there, point data.cache_dir (or "
                         "SIMSIAM_CACHE_DIR) at another disk, or set data.cache=false to read the files "
                         "(per-image pipeline)") from err


def cached(dataset: ImageFiles, side: int, cache_dir: Path, *, max_bytes: float = 16e9,
           log: Callable[[str], None] = print, warn: Optional[Callable[[str], None]] = None,
           workers: int = 0, progress: bool = True) -> Optional[InMemoryImages]:
    """``dataset`` decoded at ``side`` as an :class:`InMemoryImages` memory-mapped from the cache
    (built first when needed, with a progress bar when ``progress``), or None when it would take more
    than ``max_bytes``. Unreadable files are reported through ``warn`` (``log`` when not given)."""
    warn = warn or log
    size = len(dataset) * dataset.channels * side * slot_width(side)  # at most; squares take side * side
    if size > max_bytes:
        log(f"not caching {dataset.name}: {size / 2**30:.1f} GiB decoded is over data.cache_max_gb "
            f"({max_bytes / 2**30:.1f}); training reads the files (encoded or per-image pipeline)")
        return None
    cache_dir.mkdir(parents=True, exist_ok=True)
    stem = cache_dir / f"{dataset.name}-{len(dataset)}-{side}px-{cache_key(dataset, side)}"
    images_path, index_path = Path(f"{stem}.npy"), Path(f"{stem}.json")
    if dist.is_main():  # under torchrun rank 0 checks and decodes, the others wait
        sources = sources_fingerprint(dataset.paths)  # before the decode: a file changed meanwhile is seen next time
        _, why = problem(index_path, images_path, sources, side, dataset.channels)
        if why:
            if why == MISSING:
                log(f"decoding {len(dataset)} images of {dataset.name} once into {images_path} "
                    f"({size / 2**20:.0f} MiB)")
            else:
                warn(f"the decoded-image cache {images_path} {why}: decoding its {len(dataset)} images again")
            cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
            with _stop_signals_end_the_decode(f"{len(dataset)} images of {dataset.name}"):
                index = build(dataset, side, images_path, workers or cores, progress)
                index["sources"] = sources
                _write_index(index, index_path)
            if index["unreadable"]:
                warn(f"left out {len(index['unreadable'])} unreadable image(s), e.g. {index['unreadable'][:3]}")
    dist.barrier()
    index, why = read_index(index_path)
    if index is None:
        raise ValueError(f"the decoded-image cache {images_path} {why}; run again (it is decoded anew) or set "
                         "data.cache=false")
    # Copy-on-write mapping: pages are read on demand and shared between runs; nothing writes back.
    array = np.load(images_path, mmap_mode="c", allow_pickle=False)
    sizes = torch.tensor(index["sizes"], dtype=torch.int64).view(-1, 2) if "sizes" in index else None
    if not _holds(array, len(index["labels"]), dataset.channels, side, sizes):
        raise ValueError(f"the decoded-image cache {images_path} does not hold the images its index describes "
                         f"({array.dtype}, {array.shape}); run again (it is decoded anew) or set data.cache=false")
    images = torch.from_numpy(array)
    whole = "" if sizes is None else f", whole up to {MAX_ASPECT[0]}:{MAX_ASPECT[1]} in {side}x{array.shape[3]} slots"
    log(f"{dataset.name}: {len(images)} images decoded at {side}px{whole}, memory-mapped from {images_path} "
        f"({images_path.stat().st_size / 2**20:.0f} MiB)")
    out = InMemoryImages(images, index["labels"], dataset.name, dataset.num_classes, dataset.mean, dataset.std,
                         sizes=sizes)
    out.classes = dataset.classes
    out.paths = index["paths"]
    out.subset_of = dataset.subset_of
    return out


def _holds(array: np.ndarray, n: int, channels: int, side: int, sizes: Optional[torch.Tensor]) -> bool:
    """Whether the images file has the index's shape: squares, or slots that fit every recorded size."""
    if array.dtype != np.uint8 or array.ndim != 4 or array.shape[:3] != (n, channels, side):
        return False
    if sizes is None:
        return array.shape[3] == side
    if array.shape[3] > slot_width(side) or sizes.shape != (n, 2):
        return False
    return bool((sizes.min(dim=1).values == side).all() and (sizes.max(dim=1).values <= array.shape[3]).all())
