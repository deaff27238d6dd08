"""HEIC/HEIF photos (phones' default format): listed with the other images, decoded through the
optional pillow-heif package, and without it reported file by file with what to install."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from simsiam.data import ImageFiles, UnreadableImage, decode_image
from simsiam.data import decode as decode_module
from simsiam.data.files import list_images


def quadrants() -> np.ndarray:
    img = np.zeros((48, 64, 3), np.uint8)
    img[:24, :32], img[:24, 32:] = (220, 30, 30), (30, 200, 30)
    img[24:, :32], img[24:, 32:] = (30, 30, 220), (230, 230, 40)
    return img


def test_heic_files_are_listed(tmp_path):
    (tmp_path / "a.jpg").write_bytes(b"")
    (tmp_path / "b.HEIC").write_bytes(b"")
    (tmp_path / "c.heif").write_bytes(b"")
    assert sorted(p.rsplit("/", 1)[-1] for p in list_images(str(tmp_path))) == ["a.jpg", "b.HEIC", "c.heif"]


def test_a_heic_photo_decodes_with_the_extra(tmp_path):
    pytest.importorskip("pillow_heif")
    assert decode_module.HEIF_SUPPORTED
    path = tmp_path / "phone.heic"
    Image.fromarray(quadrants()).save(path, quality=95)
    got = np.asarray(decode_image(str(path), "RGB"))
    assert got.shape == (48, 64, 3)
    assert np.abs(got.astype(int) - quadrants().astype(int)).mean() < 8  # lossy, but the same picture
    files = ImageFiles([str(path)], [0], "phone", 1)
    assert files[0][0].size == (64, 48)


def test_without_the_extra_a_heic_file_is_one_line_saying_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setattr(decode_module, "HEIF_SUPPORTED", False)
    path = tmp_path / "IMG_0001.HEIC"
    path.write_bytes(b"\x00\x00\x00\x18ftypheic")  # the start of a real HEIC's header
    with pytest.raises(UnreadableImage) as err:
        ImageFiles([str(path)], [0], "phone", 1)[0]
    line = str(err.value)
    assert "IMG_0001.HEIC" in line and "simsiam[heic]" in line and "\n" not in line
