"""One image file (or its bytes) to pixels, the one way every path does it: opened, decoded at a
reduced scale when far more pixels are stored than asked for, turned upright by its EXIF
orientation, converted to the run's mode and resized.

Every reader of image files calls :func:`decode_image`: the per-image datasets
(``files.ImageFiles``), the decoded-image cache (``cache.py``), ``embed``/``predict``/``similar``
(through ``ImageFiles``), the thumbnails of ``similar`` and the WebDataset shards' stream
(``shard_stream.py``).

Orientation: a phone stores a portrait photo as a landscape pixel array with an EXIF tag saying
how to turn it; ignoring the tag trains on photos lying on their side. ``ImageOps.exif_transpose``
applies it (all 8 values).

Reduced-scale decode: libjpeg can decode a JPEG at 1/2, 1/4 or 1/8 of its size in the DCT itself
(``Image.draft``), at a fraction of the cost of a full decode. With ``side`` set, the largest such
reduction that still leaves the shorter side at least ``DRAFT_MARGIN * side`` pixels is used, and
the antialiased resize does the rest; the margin keeps the result close to a full decode followed
by the same resize (``tests/test_decode.py`` states the difference measured on a fixture).

HEIC/HEIF, the format phones save by default, is read through the optional ``pillow-heif`` package
(``pip install 'simsiam[heic]'``) when it is installed; without it each such file is one
"cannot decode" line that says what to install, and the run goes on without it.
"""
from __future__ import annotations

import io
from typing import Union

import numpy as np
import torchvision.transforms.functional as TF
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import UnreadableImage

try:  # optional: registers HEIC/HEIF with PIL
    import pillow_heif

    pillow_heif.register_heif_opener()
    HEIF_SUPPORTED = True
except ImportError:
    HEIF_SUPPORTED = False
HEIF_SUFFIXES = (".heic", ".heif")

# The DCT-scaled decode keeps at least this many times the asked-for side before the resize: the
# resize then still averages over 2x2 decoded pixels or more, as it would from the full image.
DRAFT_MARGIN = 2
# Off: every file decoded at full size before the resize -- the reference that
# scripts/decode_bench.py and tests/test_decode.py compare the reduced-scale decode with.
REDUCED_SCALE = True

# 16-bit grayscale (PNG, TIFF): PIL's convert("L") clips these at 255, which makes a typical
# 16-bit image nearly all white; they are scaled to 8 bits instead.
_SIXTEEN_BIT = ("I;16", "I;16B", "I;16L", "I;16N", "I")


def _to_8bit(img: Image.Image) -> Image.Image:
    """A 16-bit image (values 0..65535) as 8-bit "L", scaled: 65535 -> 255."""
    values = np.asarray(img, dtype=np.float64)
    return Image.fromarray(np.clip(np.rint(values / 257.0), 0, 255).astype(np.uint8), mode="L")


def _upright(img: Image.Image, mode: str, side: int) -> Image.Image:
    if side and REDUCED_SCALE and img.format == "JPEG":
        # draft(mode, (w, h)) picks the largest DCT reduction with both sides still >= (w, h);
        # asking for a square bounds the shorter side whichever way the photo is turned.
        want = DRAFT_MARGIN * side
        img.draft(mode if mode in ("L", "RGB") else None, (want, want))
    img.load()  # Image.open is lazy; corruption only shows up when pixels are decoded.
    img = ImageOps.exif_transpose(img)
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")  # PIL warns when converting such palettes straight to RGB/L
    if img.mode in _SIXTEEN_BIT:
        img = _to_8bit(img)
    img = img.convert(mode)
    if side:
        img = TF.resize(img, side)  # shorter side to ``side``, bilinear with antialiasing, as before
    return img


def decode_image(source: Union[str, bytes], mode: str, side: int = 0, name: str = "") -> Image.Image:
    """The image in ``source`` (a path, or a file's bytes named ``name``) upright and in ``mode``;
    with ``side`` its shorter side resized to ``side`` (decoded at a reduced scale where the file
    is a JPEG far larger). Raises :class:`UnreadableImage` on any decoder failure."""
    label = name or (source if isinstance(source, str) else "<bytes>")
    if not HEIF_SUPPORTED and str(label).lower().endswith(HEIF_SUFFIXES):
        raise UnreadableImage(label, "HEIC/HEIF photos need the optional pillow-heif package: "
                                     "pip install 'simsiam[heic]' (or convert them to JPEG)")
    try:
        with Image.open(source if isinstance(source, str) else io.BytesIO(source)) as img:
            return _upright(img, mode, side)
    except UnidentifiedImageError as exc:  # its own text names the BytesIO object (an address) for bytes
        raise UnreadableImage(label, "UnidentifiedImageError: not an image format PIL can read") from exc
    except Exception as exc:  # PIL plugins raise many types (OSError, SyntaxError, ValueError, ...)
        raise UnreadableImage(label, f"{type(exc).__name__}: {exc}") from exc
