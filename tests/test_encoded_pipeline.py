"""The encoded pipeline on the CPU: a folder's bytes in one store (data/encoded_store.py), decoded in
batches by torchvision (data/encoded_decode.py) and augmented as a cached batch (data/encoded_loader.py)."""
from __future__ import annotations

import io
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

from simsiam import get_preset
from simsiam.data import encoded_decode
from simsiam.data.cache import cached
from simsiam.data.encoded_decode import (
    decode_batch,
    decoder_unavailable,
    exif_orientation,
    jpeg_size,
)
from simsiam.data.encoded_loader import EncodedBatchLoader
from simsiam.data.encoded_store import encoded_if_configured, stored
from simsiam.data.files import ImageFiles
from simsiam.data.loaders import BatchedViewLoader, build_train_loader

SIDE = 16
ORIENTATION = 0x0112


def _photo(h: int, w: int, seed: int) -> np.ndarray:
    """Smooth colour gradients (JPEG-friendly, as photos are) with a bright top-left corner marker."""
    y, x = np.mgrid[0:h, 0:w]
    img = np.stack([x * 200 // w + seed * 7, y * 200 // h, (x + y) * 100 // (h + w) + 50], -1)
    img[: h // 4, : w // 4] = (250, 20, 20)
    return np.clip(img, 0, 255).astype(np.uint8)


def _jpeg_bytes(pixels: np.ndarray, orientation: int = 0) -> bytes:
    buf = io.BytesIO()
    kw = {}
    if orientation:
        exif = Image.Exif()
        exif[0x010F], exif[0x0110] = "Camera maker", "Model"  # tags before and after it, as cameras write
        exif[ORIENTATION] = orientation
        exif[0x0131] = "Software 1.0"
        kw["exif"] = exif.tobytes()
    Image.fromarray(pixels).save(buf, "JPEG", quality=92, **kw)
    return buf.getvalue()


def _sideways(upright: np.ndarray) -> np.ndarray:
    """The pixel array a phone stores for an upright portrait with EXIF orientation 6."""
    return np.ascontiguousarray(np.rot90(upright, k=1))


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> ImageFiles:
    """12 photos in 2 classes: 4:3, 3:4 and square JPEGs larger than the stored side, a wide 16:9 one,
    a PNG, and a portrait stored sideways with its EXIF orientation tag."""
    root = tmp_path_factory.mktemp("encoded_folder")
    paths, labels = [], []
    shapes = [(48, 64), (64, 48), (40, 40), (36, 64), (30, 40)]
    for i in range(12):
        label = i % 2
        d = root / str(label)
        d.mkdir(exist_ok=True)
        h, w = shapes[i % len(shapes)]
        if i == 5:
            path = d / "png.png"
            Image.fromarray(_photo(h, w, i)).save(path)
        elif i == 7:
            path = d / "portrait_exif6.jpg"
            path.write_bytes(_jpeg_bytes(_sideways(_photo(64, 48, i)), orientation=6))
        else:
            path = d / f"{i}.jpg"
            path.write_bytes(_jpeg_bytes(_photo(h, w, i)))
        paths.append(str(path))
        labels.append(label)
    return ImageFiles(paths, labels, "imagefolder", 2)


def _cfg(tmp_path: Path, batch: int = 4):
    cfg = get_preset("digits")
    cfg.data.dataset, cfg.data.image_size, cfg.data.cache_dir = "imagefolder", SIDE, str(tmp_path / "cache")
    cfg.data.pipeline = "encoded"
    cfg.optim.batch_size = batch
    return cfg


def test_torchvision_decodes_here():
    assert decoder_unavailable() is None  # the rest of this file needs it


def test_the_store_holds_the_files_bytes_and_is_packed_once(folder, tmp_path):
    lines = []
    store = stored(folder, tmp_path, log=lines.append)
    assert len(store) == len(folder) and store.labels == folder.labels
    order = [7, 0, 11, 3, 3]  # any order, repeats included: one pass in file order, given back as asked
    for i, blob in zip(order, store.read(order)):
        assert blob.tobytes() == Path(folder.paths[i]).read_bytes()
    assert any("packing" in line for line in lines)
    lines.clear()
    again = stored(folder, tmp_path, log=lines.append)
    assert not any("packing" in line for line in lines) and again.data_path == store.data_path
    img, label = again[7]  # one image as ImageFiles gives it (the kNN monitor's path): PIL, upright
    assert (img.height, img.width, label) == (64, 48, folder.labels[7])


def test_a_changed_source_or_a_truncated_store_is_packed_again(folder, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(Path(folder.paths[0]).parent.parent, copy)
    files = ImageFiles([p.replace(str(Path(folder.paths[0]).parent.parent), str(copy)) for p in folder.paths],
                       folder.labels, "imagefolder", 2)
    store = stored(files, tmp_path / "s")
    Path(files.paths[0]).write_bytes(_jpeg_bytes(_photo(48, 64, 99)))  # rewritten in place: same name
    warnings = []
    store = stored(files, tmp_path / "s", warn=warnings.append, log=lambda s: None)
    assert any("stale" in w for w in warnings), warnings
    assert store.read([0])[0].tobytes() == Path(files.paths[0]).read_bytes()
    with open(store.data_path, "r+b") as fh:
        fh.truncate(100)
    warnings.clear()
    store = stored(files, tmp_path / "s", warn=warnings.append, log=lambda s: None)
    assert any("bytes long where" in w for w in warnings), warnings
    assert store.read([11])[0].tobytes() == Path(files.paths[11]).read_bytes()


def test_all_eight_exif_orientations_decode_as_pil_turns_them():
    """The turn is the pipeline's own (torchvision ignores apply_exif_orientation on CUDA): the
    same code on both devices, checked here against PIL on each value, little- and big-endian."""
    pixels = _photo(24, 32, 3)
    big_endian = _jpeg_bytes(pixels)  # Image.Exif writes little-endian; a big-endian block by hand:
    app1 = b"Exif\0\0MM\0\x2a\0\0\0\x08\0\x01" + b"\x01\x12\0\x03\0\0\0\x01\0\x06\0\0" + b"\0\0\0\0"
    big_endian = big_endian[:2] + b"\xff\xe1" + (len(app1) + 2).to_bytes(2, "big") + app1 + big_endian[2:]
    assert exif_orientation(np.frombuffer(big_endian, dtype=np.uint8)) == 6
    with Image.open(io.BytesIO(big_endian)) as im:
        assert im.getexif().get(ORIENTATION) == 6  # PIL reads the hand-made block the same
    assert exif_orientation(np.frombuffer(_jpeg_bytes(pixels), dtype=np.uint8)) == 1
    for orientation in range(1, 9):
        blob = np.frombuffer(_jpeg_bytes(pixels, orientation), dtype=np.uint8)
        assert exif_orientation(blob) == orientation
        (image, upright), = decode_batch([blob], ["x.jpg"], 3, 24, torch.device("cpu"))[0]
        with Image.open(io.BytesIO(blob.tobytes())) as im:
            expected = np.asarray(ImageOps.exif_transpose(im).convert("RGB"))
        assert upright == expected.shape[:2], orientation
        got = image.transpose(1, 2) if upright[0] > upright[1] else image  # stored landscape
        assert np.array_equal(got.permute(1, 2, 0).numpy(), expected), orientation  # no resize at side 24


def test_a_sideways_portrait_comes_out_upright(folder, tmp_path):
    store = stored(folder, tmp_path)
    (image, upright), = decode_batch(store.read([7]), [folder.paths[7]], 3, SIDE, torch.device("cpu"))[0]
    assert upright == (SIDE * 4 // 3, SIDE)  # portrait 3:4 after the resize
    upright_pixels = image.transpose(1, 2)  # (C, h, w) upright
    corner = upright_pixels[:, :2, :2].float().mean(dim=(1, 2))
    assert corner[0] > 200 and corner[1] < 80  # the red marker at the top left, where the photo has it


def test_png_falls_back_and_a_truncated_jpeg_is_named_and_skipped(folder, tmp_path):
    good = np.frombuffer(Path(folder.paths[0]).read_bytes(), dtype=np.uint8)
    png = np.frombuffer(Path(folder.paths[5]).read_bytes(), dtype=np.uint8)
    out, skipped = decode_batch([good, good[: len(good) // 2].copy(), png], ["good.jpg", "bad.jpg", "p.png"], 3, SIDE,
                                torch.device("cpu"))
    assert out[0] is not None and out[2] is not None and out[1] is None
    assert len(skipped) == 1 and "bad.jpg" in skipped[0] and skipped[0].startswith("cannot decode image")


def test_views_equal_the_decoded_cache_paths_views(folder, tmp_path):
    """Same images, seed and recipe: the cache (PIL decode and resize) against the store (libjpeg-turbo
    through torchvision, torch's antialiased resize). The decoders give the same pixels (full-size
    decodes here; PIL's reduced-scale decode starts at 4x the side); the two resizes differ by
    rounding: measured on these photos, at most 1 level of 255 in the stored pixels (0.11 on
    average), and at most 0.025 in the normalised views (the jitter's contrast and saturation
    scale a difference up), with the native kernel and with the torch ops alike."""
    cfg = _cfg(tmp_path)
    cache = cached(folder, SIDE, tmp_path / "cache", log=lambda s: None, progress=False)
    store = stored(folder, tmp_path / "cache", log=lambda s: None)
    assert len(cache) == len(store)
    decoded, _ = decode_batch(store.read(range(len(store))), store.paths, 3, SIDE, torch.device("cpu"))
    for i, (image, upright) in enumerate(decoded):
        assert tuple(cache.sizes[i].tolist()) == upright
        stored_cache = cache.images[i, :, :, :image.shape[-1]]
        assert (stored_cache.int() - image.int()).abs().max() <= 1, i
    cached_loader = BatchedViewLoader(cache, cfg, 2, torch.device("cpu"))
    encoded_loader = EncodedBatchLoader(store, cfg, 2, torch.device("cpu"))
    for a, b in zip(cached_loader.epoch(0), encoded_loader.epoch(0), strict=True):
        assert torch.equal(a["index"], b["index"]) and torch.equal(a["labels"], b["labels"])
        for va, vb in zip(a["views"], b["views"]):
            assert va.shape == vb.shape
            assert (va - vb).abs().max() <= 0.03


def test_a_resumed_epoch_is_the_rest_of_the_same_epoch(folder, tmp_path):
    cfg = _cfg(tmp_path, batch=4)
    loader = EncodedBatchLoader(stored(folder, tmp_path), cfg, 2, torch.device("cpu"))
    whole = list(loader.epoch(3))
    rest = list(loader.epoch(3, start_batch=1))
    assert len(whole) == 3 and len(rest) == 2
    for a, b in zip(whole[1:], rest):
        assert torch.equal(a["index"], b["index"])
        for va, vb in zip(a["views"], b["views"]):
            assert torch.equal(va, vb)


def test_a_truncated_file_is_skipped_with_its_name_and_the_batch_refilled(folder, tmp_path):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(Path(folder.paths[0]).read_bytes()[:200])
    files = ImageFiles([*folder.paths, str(bad)], [*folder.labels, 1], "imagefolder", 2)
    cfg = _cfg(tmp_path, batch=13)  # one batch: every image, the truncated one included
    loader = EncodedBatchLoader(stored(files, tmp_path), cfg, 2, torch.device("cpu"))
    batch, = list(loader.epoch(0))
    assert len(batch["skipped"]) == 1 and str(bad) in batch["skipped"][0]
    assert batch["views"][0].shape == (13, 3, SIDE, SIDE) and len(batch["index"]) == 13
    assert 12 not in batch["index"].tolist()  # its place taken by a readable image of the batch


def test_bytes_damaged_in_the_store_are_named_and_skipped(folder, tmp_path):
    store = stored(folder, tmp_path)
    with open(store.data_path, "r+b") as fh:  # one byte inside image 4's bytes, the file's size unchanged
        fh.seek(int(store.offsets[4] + store.lengths[4] // 2))
        byte = fh.read(1)
        fh.seek(-1, 1)
        fh.write(bytes([byte[0] ^ 0xFF]))
    fresh = stored(folder, tmp_path, log=lambda s: None)  # same size, same sources: opened as it is
    assert fresh.read([4])[0] is None
    loader = EncodedBatchLoader(fresh, _cfg(tmp_path, batch=12), 2, torch.device("cpu"))
    batch, = list(loader.epoch(0))
    assert len(batch["skipped"]) == 1 and folder.paths[4] in batch["skipped"][0]
    assert "changed since they were packed" in batch["skipped"][0]


def test_the_choice_between_the_pipelines(folder, tmp_path, monkeypatch, digits_cfg):
    cfg = _cfg(tmp_path)
    lines = []
    chosen = encoded_if_configured(folder, cfg.data, "cpu", log=lines.append)
    assert isinstance(build_train_loader(chosen, cfg, 2, torch.device("cpu")), EncodedBatchLoader)
    assert any("encoded pipeline" in line for line in lines)
    cfg.data.pipeline = "per_image"
    assert encoded_if_configured(folder, cfg.data, "cpu") is folder
    cfg.data.pipeline = "auto"
    monkeypatch.setattr("simsiam.data.encoded_store.decoder_unavailable", lambda: "RuntimeError: no libjpeg")
    lines.clear()
    assert encoded_if_configured(folder, cfg.data, "cpu", log=lines.append) is folder
    assert "per-image pipeline" in lines[0] and "no libjpeg" in lines[0]
    cfg.data.pipeline = "encoded"
    with pytest.raises(ValueError, match="data.pipeline=encoded needs torchvision's JPEG decoder"):
        encoded_if_configured(folder, cfg.data, "cpu")
    digits_cfg.data.pipeline = "encoded"
    from simsiam.data import load_dataset

    with pytest.raises(ValueError, match="needs an image folder"):
        build_train_loader(load_dataset("digits", "train"), digits_cfg, 2, torch.device("cpu"))


def test_a_folder_over_the_cache_bound_trains_on_the_encoded_pipeline(folder, tmp_path, capsys):
    from simsiam.cli import main

    root = str(Path(folder.paths[0]).parent.parent)
    argv = ["pretrain", "--preset", "digits", "--quiet", "data.dataset=folder", "--data-dir", root,
            "data.eval_split=", f"data.image_size={SIDE}", "data.cache_max_gb=0", "optim.batch_size=4",
            "model.width=4", "model.proj_hidden=32", "model.dim=32", "--epochs", "1",
            f"data.cache_dir={tmp_path / 'cache'}", "--out-dir", str(tmp_path / "run")]
    assert main(argv) == 0
    out = capsys.readouterr()
    text = out.out + out.err
    assert "over data.cache_max_gb" in text and "encoded pipeline" in text
    assert (tmp_path / "run" / "checkpoint.pt").exists()


def test_each_rank_takes_its_slice_of_every_global_batch_as_the_cached_path(folder, tmp_path, monkeypatch):
    """Two ranks (their rank and world size stood in for): together every image of each global batch
    once, each rank the slice the decoded cache's loader gives it."""
    import simsiam.parallel.distributed as dist

    cfg = _cfg(tmp_path, batch=4)
    cache = cached(folder, SIDE, tmp_path / "cache", log=lambda s: None, progress=False)
    store = stored(folder, tmp_path / "cache", log=lambda s: None)
    monkeypatch.setattr(dist, "world_size", lambda: 2)
    seen = []
    for r in (0, 1):
        monkeypatch.setattr(dist, "rank", lambda r=r: r)
        encoded = [b["index"] for b in EncodedBatchLoader(store, cfg, 2, torch.device("cpu")).epoch(2)]
        batched = [b["index"] for b in BatchedViewLoader(cache, cfg, 2, torch.device("cpu")).epoch(2)]
        assert [e.tolist() for e in encoded] == [b.tolist() for b in batched] and all(len(e) == 2 for e in encoded)
        seen.append(torch.cat(encoded))
    everything = torch.cat(seen).sort().values
    assert everything.tolist() == sorted(set(everything.tolist())) and len(everything) == 12


def test_a_store_the_disk_cannot_hold_is_refused_in_one_line(folder, tmp_path, monkeypatch):
    from collections import namedtuple

    usage = namedtuple("usage", "total used free")
    from simsiam.data import encoded_store

    monkeypatch.setattr(encoded_store.shutil, "disk_usage", lambda path: usage(10**6, 10**6 - 100, 100))
    with pytest.raises(ValueError, match=r"needs \d+ MiB in .* which has 0 MiB free: free space there"):
        stored(folder, tmp_path, log=lambda s: None)
    assert not list(tmp_path.iterdir())  # nothing left behind


# ------------------------------------------------------------------------------- camera-sized photos
def test_a_jpegs_size_is_read_from_its_frame_header():
    for progressive in (False, True):
        buf = io.BytesIO()
        Image.fromarray(_photo(30, 52, 0)).save(buf, "JPEG", progressive=progressive)
        assert jpeg_size(np.frombuffer(buf.getvalue(), dtype=np.uint8)) == (30, 52), progressive
    with_exif = np.frombuffer(_jpeg_bytes(_photo(40, 24, 1), orientation=6), dtype=np.uint8)
    assert jpeg_size(with_exif) == (40, 24)  # stored size, before the turn
    assert jpeg_size(np.frombuffer(b"\xff\xd8\xff\xe0\x00\x02 not a jpeg", dtype=np.uint8)) is None


def test_large_jpegs_on_the_cpu_decode_at_reduced_scale_as_the_cache_stores_them():
    """A JPEG of four stored sides or more goes to PIL's reduced-scale decode: exactly the cache's pixels."""
    from simsiam.data.cache import stored_pixels

    blob = np.frombuffer(_jpeg_bytes(_photo(300, 400, 2), orientation=6), dtype=np.uint8)
    (image, upright), = decode_batch([blob], ["big.jpg"], 3, SIDE, torch.device("cpu"))[0]
    pixels, cache_upright = stored_pixels(blob.tobytes(), SIDE, 3, name="big.jpg")
    assert upright == cache_upright and torch.equal(image, torch.from_numpy(pixels))


def test_decoding_in_groups_bounded_in_bytes_gives_the_same_images(folder, tmp_path, monkeypatch):
    store = stored(folder, tmp_path, log=lambda s: None)
    blobs = store.read(range(len(store)))
    whole, _ = decode_batch(blobs, store.paths, 3, SIDE, torch.device("cpu"))
    calls = []
    real = encoded_decode._batch_decode
    monkeypatch.setattr(encoded_decode, "_batch_decode", lambda b, *a: calls.append(len(b)) or real(b, *a))
    monkeypatch.setattr(encoded_decode, "DECODE_BYTES", 1)  # every image a group of its own
    grouped, _ = decode_batch(blobs, store.paths, 3, SIDE, torch.device("cpu"))
    assert len(calls) > 1 and max(calls) == 1
    for a, b in zip(whole, grouped):
        assert (a is None) == (b is None)
        if a is not None:
            assert torch.equal(a[0], b[0]) and a[1] == b[1]
