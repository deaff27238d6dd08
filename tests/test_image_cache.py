"""data/cache.py: an image folder decoded once into a memory-mapped uint8 array for the batched pipeline."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from fixtures_data import write_truncated_jpeg
from PIL import Image

import simsiam.data.cache as cache
from simsiam import apply_overrides, get_preset
from simsiam.data import InMemoryImages, load_dataset
from simsiam.data.cache import cached, decoded_if_configured
from simsiam.data.loaders import BatchedViewLoader, build_train_loader


def _folder(root: Path) -> Path:
    """Two classes of non-square RGB and grayscale images, and one truncated JPEG."""
    for i in range(6):
        cls = "a" if i % 2 == 0 else "b"
        pixels = np.full((20, 30, 3), 40 * i, dtype=np.uint8)
        img = Image.fromarray(pixels)
        (root / "train" / cls).mkdir(parents=True, exist_ok=True)
        (img.convert("L") if i == 3 else img).save(root / "train" / cls / f"{i}.png")
    write_truncated_jpeg(root / "train" / "b" / "broken.jpg")
    return root


def test_a_folder_is_decoded_once_at_the_storage_side_without_its_unreadable_files(tmp_path):
    files = load_dataset("imagefolder", "train", str(_folder(tmp_path / "data")))
    lines: list[str] = []
    data = cached(files, 16, tmp_path / "cache", log=lines.append, workers=2)
    # 20 x 30 photos: the shorter side resized to 16, the longer (24) kept up to 4:3 (21), centre-cropped.
    assert isinstance(data, InMemoryImages) and data.images.shape == (6, 3, 16, 21)
    assert data.sizes.tolist() == [[16, 21]] * 6
    assert data.images.dtype == torch.uint8 and sorted(data.labels.tolist()) == [0, 0, 0, 1, 1, 1]
    assert any("left out 1 unreadable" in line and "broken.jpg" in line for line in lines)
    # Image i is uniformly 40*i (the grey one too).
    for path, img in zip(data.paths, data.images):
        value = 40 * int(Path(path).stem)
        assert (img.int() - value).abs().max() <= 1, path
    cache_files = sorted(p.suffix for p in (tmp_path / "cache").iterdir())
    assert cache_files == [".json", ".npy"]  # no temporary left behind


def test_a_second_run_maps_the_cache_and_a_touched_file_redoes_it_in_place(tmp_path, monkeypatch):
    root = _folder(tmp_path / "data")
    files = load_dataset("imagefolder", "train", str(root))
    first = cached(files, 8, tmp_path / "cache", log=lambda _: None, workers=1)

    def no_rebuild(*args, **kwargs):
        raise AssertionError("the cache was rebuilt")

    monkeypatch.setattr(cache, "build", no_rebuild)
    again = cached(load_dataset("imagefolder", "train", str(root)), 8, tmp_path / "cache", log=lambda _: None)
    assert torch.equal(again.images, first.images)
    monkeypatch.undo()
    touched = root / "train" / "a" / "0.png"
    os.utime(touched, ns=(touched.stat().st_atime_ns, touched.stat().st_mtime_ns + 10**9))
    lines: list[str] = []
    cached(load_dataset("imagefolder", "train", str(root)), 8, tmp_path / "cache", log=lines.append, workers=1)
    assert len(list((tmp_path / "cache").glob("*.json"))) == 1  # the same cache, redone: no stale copy left
    assert any("is stale" in line and "decoding its 7 images again" in line for line in lines), lines


def test_the_same_folder_named_relatively_is_the_same_cache(tmp_path, monkeypatch):
    root = _folder(tmp_path / "data")
    absolute = load_dataset("imagefolder", "train", str(root))
    monkeypatch.chdir(tmp_path)
    relative = load_dataset("imagefolder", "train", "data")
    assert relative.paths[0] != absolute.paths[0]
    assert cache.cache_key(relative, 8) == cache.cache_key(absolute, 8)


def test_a_full_disk_is_one_clear_error_and_leaves_nothing_behind(tmp_path, monkeypatch):
    import errno

    def disk_full(fd, offset, length):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(cache.os, "posix_fallocate", disk_full)
    files = load_dataset("imagefolder", "train", str(_folder(tmp_path / "data")))
    with pytest.raises(ValueError, match=r"needs 0 MiB in .*cache.*MiB free.*data.cache_dir.*data.cache=false"):
        cached(files, 8, tmp_path / "cache", log=lambda _: None, workers=1)
    assert list((tmp_path / "cache").iterdir()) == []


def test_a_folder_over_the_size_limit_stays_on_files(tmp_path):
    files = load_dataset("imagefolder", "train", str(_folder(tmp_path / "data")))
    lines: list[str] = []
    assert cached(files, 16, tmp_path / "cache", max_bytes=100, log=lines.append) is None
    assert "data.cache_max_gb" in lines[0]


@pytest.mark.parametrize("overrides, batched", [([], True), (["data.cache=false"], False),
                                                (["data.pipeline=per_image"], False)])
def test_the_config_puts_a_cached_folder_on_the_batched_pipeline(tmp_path, overrides, batched):
    root = _folder(tmp_path / "data")
    cfg = apply_overrides(get_preset("digits"), ["data.dataset=imagefolder", f"data.data_dir={root}",
                                                 "data.image_size=12", f"data.cache_dir={tmp_path / 'cache'}",
                                                 "optim.batch_size=4", *overrides])
    data = decoded_if_configured(load_dataset("imagefolder", "train", str(root)), cfg.data, log=lambda _: None)
    loader = build_train_loader(data, cfg, 2, torch.device("cpu"))
    assert isinstance(loader, BatchedViewLoader) == batched
    if batched:
        views = next(iter(loader.epoch(0)))["views"]
        assert views[0].shape == (4, 3, 12, 12)


def test_decode_chunks_keep_every_process_busy_on_a_small_folder():
    """A small folder of large photos is handed out in small chunks (at least 8 a process, so the
    last chunks balance the processes); a large folder in chunks of 64 (fewer round trips)."""
    from simsiam.data.cache import decode_chunk

    assert decode_chunk(202, 2) == 12
    assert decode_chunk(202, 2) * 8 * 2 <= 202
    assert decode_chunk(100_000, 2) == 64
    assert decode_chunk(5, 2) == 1 and decode_chunk(0, 0) == 1
