"""Decoding one image file: upright by its EXIF orientation in every path, and the reduced-scale
JPEG decode close to a full decode followed by the same resize."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from simsiam.data import ImageFiles, decode_image
from simsiam.data.cache import cached
from simsiam.eval.similar import THUMB, _thumbnail

H, W = 48, 32  # a portrait photo
ORIENTATION_TAG = 0x0112


def upright() -> np.ndarray:
    """Four quadrants of different colours: any turn or mirror moves at least two of them."""
    img = np.zeros((H, W, 3), np.uint8)
    img[: H // 2, : W // 2] = (220, 30, 30)
    img[: H // 2, W // 2:] = (30, 200, 30)
    img[H // 2:, : W // 2] = (30, 30, 220)
    img[H // 2:, W // 2:] = (230, 230, 40)
    return img


def stored_as(value: int, img: np.ndarray) -> np.ndarray:
    """The pixel array a camera writes with orientation ``value``, from the EXIF 2.3 table (where
    the stored 0th row and 0th column are seen): written from the standard, not from PIL's code."""
    return {
        1: lambda u: u,
        2: lambda u: u[:, ::-1],  # 0th row top, 0th column right
        3: lambda u: u[::-1, ::-1],  # bottom, right
        4: lambda u: u[::-1, :],  # bottom, left
        5: lambda u: u.transpose(1, 0, 2),  # 0th row left, 0th column top
        6: lambda u: np.rot90(u, 1),  # right, top: the phone held upright, sensor turned
        7: lambda u: u[::-1, ::-1].transpose(1, 0, 2),  # right, bottom
        8: lambda u: np.rot90(u, -1),  # left, bottom
    }[value](img)


def write_sideways(path, value: int, fmt: str = "JPEG") -> str:
    exif = Image.Exif()
    exif[ORIENTATION_TAG] = value
    Image.fromarray(np.ascontiguousarray(stored_as(value, upright()))).save(path, fmt, quality=95,
                                                                             exif=exif.tobytes())
    return str(path)


@pytest.fixture
def eight(tmp_path) -> list[str]:
    """One file per orientation value, each holding the same upright picture."""
    (tmp_path / "photos").mkdir()
    return [write_sideways(tmp_path / "photos" / f"o{v}.jpg", v) for v in range(1, 9)]


def far(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.float64) - b.astype(np.float64)).mean())


def test_the_fixtures_are_stored_sideways(eight):
    # Without the tag applied, all but orientation 1 differ from the upright picture: the test below can fail.
    for value, path in enumerate(eight, start=1):
        with Image.open(path) as raw:
            pixels = np.asarray(raw.convert("RGB"))
        assert (pixels.shape == upright().shape and far(pixels, upright()) < 4) == (value == 1), value


def test_every_orientation_decodes_upright(eight):
    for value, path in enumerate(eight, start=1):
        pixels = np.asarray(decode_image(path, "RGB"))
        assert pixels.shape == (H, W, 3), value
        assert far(pixels, upright()) < 4, value


def test_per_image_datasets_decode_upright(eight):
    # ImageFiles is what the per-image training path, embed, predict and similar's queries read.
    files = ImageFiles(eight, [0] * 8, "photos", 1)
    for value in range(1, 9):
        assert far(np.asarray(files[value - 1][0]), upright()) < 4, value
    gray = ImageFiles(eight, [0] * 8, "photos", 1, channels=1, mean=(0.5,), std=(0.5,))
    reference = np.asarray(Image.fromarray(upright()).convert("L"))
    for value in range(1, 9):
        assert far(np.asarray(gray[value - 1][0]), reference) < 4, value


def test_the_cache_stores_upright(eight, tmp_path):
    files = ImageFiles(eight, [0] * 8, "photos", 1)
    out = cached(files, 16, tmp_path / "cache", log=lambda _: None, workers=1, progress=False)
    up = tmp_path / "up.png"
    Image.fromarray(upright()).save(up)
    reference = cached(ImageFiles([str(up)], [0], "up", 1), 16, tmp_path / "cache", log=lambda _: None,
                       workers=1, progress=False).images[0]
    for value in range(1, 9):
        assert far(out.images[value - 1].numpy(), reference.numpy()) < 6, value


def test_similar_thumbnails_are_upright(eight):
    reference = np.asarray(Image.fromarray(upright()).resize((THUMB, THUMB), Image.Resampling.BICUBIC))
    for value in range(1, 9):
        assert far(np.asarray(_thumbnail(eight[value - 1])), reference) < 6, value


def test_a_png_with_an_orientation_tag_is_turned_too(tmp_path):
    path = write_sideways(tmp_path / "o6.png", 6, fmt="PNG")
    assert far(np.asarray(decode_image(path, "RGB")), upright()) == 0


def test_bytes_decode_like_the_file(eight):
    with open(eight[5], "rb") as fh:
        data = fh.read()
    assert np.array_equal(np.asarray(decode_image(data, "RGB", 16, name="x.jpg")),
                          np.asarray(decode_image(eight[5], "RGB", 16)))


def photo_like(path, w: int = 1600, h: int = 1200, seed: int = 0) -> str:
    """A JPEG with a photo's mix of smooth shading and fine texture (noise, edges) at every scale."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w] / max(h, w)
    base = np.stack([np.sin(6 * x + c) * np.cos(4 * y - c) for c in (0.0, 1.0, 2.0)], -1) * 80 + 128
    small = rng.normal(0, 40, (h // 16, w // 16, 3))
    blobs = np.asarray(Image.fromarray(np.clip(small + 128, 0, 255).astype(np.uint8)).resize((w, h)), np.float64) - 128
    pixels = base + blobs + rng.normal(0, 12, (h, w, 3))  # sensor-like grain
    pixels[h // 3: h // 3 + 40, :] = 250  # a hard edge
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(path, quality=90)
    return str(path)


@pytest.mark.parametrize("side", [64, 224])
def test_reduced_scale_decode_is_close_to_full_decode_then_resize(tmp_path, monkeypatch, side):
    """Measured on this fixture (1600x1200, JPEG q90), against full decode + the same resize:
    side 64 (decoded at 1/8, 200x150): mean |diff| 0.60, max 4 of 255;
    side 224 (decoded at 1/2, 800x600): mean |diff| 0.42, max 4."""
    import simsiam.data.decode as decode

    path = photo_like(tmp_path / "photo.jpg")
    reduced = np.asarray(decode_image(path, "RGB", side), np.int16)
    monkeypatch.setattr(decode, "REDUCED_SCALE", False)
    full = np.asarray(decode_image(path, "RGB", side), np.int16)
    assert reduced.shape == full.shape == (side, side * 4 // 3, 3)
    diff = np.abs(reduced - full)
    assert diff.mean() < 1.0 and diff.max() <= 8, (diff.mean(), diff.max())
    with Image.open(path) as im:  # and it did decode at a reduced scale
        im.draft("RGB", (2 * side, 2 * side))
        assert im.size[0] < 1600
