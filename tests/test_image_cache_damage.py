"""data/cache.py and cache_check.py: a damaged or stale decoded-image cache is decoded again, never trusted or unpickled."""
from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from simsiam.data import load_dataset
from simsiam.data.cache import cached
from simsiam.data.cache_check import EDGE_BYTES, sources_fingerprint


def _folder(root: Path, n: int = 6) -> Path:
    """BMP files (uncompressed: another picture of the same size is a file of the same byte size)."""
    rng = np.random.default_rng(0)
    for i in range(n):
        (root / "train" / "ab"[i % 2]).mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)).save(root / "train" / "ab"[i % 2] / f"{i}.bmp")
    return root


def _cache(root: Path, cache_dir: Path, lines: list[str]):
    return cached(load_dataset("imagefolder", "train", str(root)), 8, cache_dir, log=lines.append, workers=1,
                  progress=False)


def _no_unpickling(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the cache was unpickled")

    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)


def _zero_pixels(images: Path, index: Path) -> None:
    stat = images.stat()
    with open(images, "r+b") as fh:  # the header is 128 bytes; zero the rest, keeping size and time
        fh.seek(128)
        fh.write(bytes(stat.st_size - 128))
    os.utime(images, ns=(stat.st_atime_ns, stat.st_mtime_ns))


def _truncate_images(images: Path, index: Path) -> None:
    with open(images, "r+b") as fh:
        fh.truncate(images.stat().st_size // 2)


def _random_bytes(images: Path, index: Path) -> None:
    images.write_bytes(np.random.default_rng(1).integers(0, 256, images.stat().st_size, dtype=np.uint8).tobytes())


def _pickle_in_place(images: Path, index: Path) -> None:
    images.write_bytes(pickle.dumps({"not": "images"}))


def _truncate_index(images: Path, index: Path) -> None:
    index.write_bytes(index.read_bytes()[:40])


def _invalid_index(images: Path, index: Path) -> None:
    index.write_text(json.dumps({"format": 3, "labels": "all of them"}))


def _binary_index(images: Path, index: Path) -> None:
    index.write_bytes(bytes(range(256)))


def _images_removed(images: Path, index: Path) -> None:
    images.unlink()


@pytest.mark.parametrize("damage, why", [
    (_zero_pixels, "does not match its checksum"),
    (_truncate_images, "truncated or overwritten"),
    (_random_bytes, "does not match its checksum"),
    (_pickle_in_place, "truncated or overwritten"),
    (_truncate_index, "has a damaged index, .*json \\(JSONDecodeError"),
    (_invalid_index, "has a damaged index, .*json \\(no valid 'labels'\\)"),
    (_binary_index, "has a damaged index, .*json \\(UnicodeDecodeError"),
    (_images_removed, "has lost its images file"),
])
def test_a_damaged_cache_is_decoded_again_with_one_line_naming_it(tmp_path, monkeypatch, damage, why):
    import re

    root = _folder(tmp_path / "data")
    first = _cache(root, tmp_path / "cache", [])
    reference = first.images.clone()
    del first
    images = next((tmp_path / "cache").glob("*.npy"))
    damage(images, images.with_suffix(".json"))
    _no_unpickling(monkeypatch)
    lines: list[str] = []
    again = _cache(root, tmp_path / "cache", lines)
    said = [line for line in lines if "decoding its 6 images again" in line]
    assert len(said) == 1 and str(images) in said[0] and re.search(why, said[0]), lines
    assert torch.equal(again.images, reference)  # the pixels of the files, not of the damage
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == [images.with_suffix(".json").name, images.name]
    # ...and the cache decoded again is trusted the next time.
    lines.clear()
    _cache(root, tmp_path / "cache", lines)
    assert not [line for line in lines if "again" in line or "decoding" in line], lines


def test_a_source_replaced_by_another_of_the_same_size_and_time_is_decoded_again(tmp_path):
    root = _folder(tmp_path / "data")
    first = _cache(root, tmp_path / "cache", [])
    changed = root / "train" / "a" / "0.bmp"
    row = first.paths.index(str(changed))
    before = changed.stat()
    Image.fromarray(np.full((12, 12, 3), 7, dtype=np.uint8)).save(changed)
    os.utime(changed, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert changed.stat().st_size == before.st_size and changed.stat().st_mtime_ns == before.st_mtime_ns
    lines: list[str] = []
    again = _cache(root, tmp_path / "cache", lines)
    assert any("is stale" in line for line in lines), lines
    assert (again.images[row] == 7).all() and not (first.images[row] == 7).all()


def test_the_fingerprint_reads_each_files_first_and_last_blocks(tmp_path):
    path = tmp_path / "f.bin"
    data = bytes(3 * EDGE_BYTES)
    path.write_bytes(data)
    stat = path.stat()
    untouched = sources_fingerprint([str(path)])

    def one_byte_changed(offset: int) -> str:  # the same size and modification time
        path.write_bytes(data[:offset] + b"\1" + data[offset + 1:])
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
        return sources_fingerprint([str(path)])

    assert one_byte_changed(0) != untouched
    assert one_byte_changed(len(data) - 1) != untouched
    # The middle of a large file rewritten at the same size and time is what it does not read (the measured trade).
    assert one_byte_changed(EDGE_BYTES + 5) == untouched
