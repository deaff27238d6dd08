"""A batch of encoded images decoded in one call and put in the decoded cache's stored form, on the device.

``torchvision.io.decode_jpeg`` takes a list of JPEGs and a device: on CUDA the whole batch is
decoded by nvJPEG on the GPU, on the CPU by libjpeg-turbo (the library PIL uses). Each image is
turned upright by its EXIF orientation here, on the device, rather than by the decoder: torchvision
0.29 applies ``apply_exif_orientation`` on the CPU only and ignores it on CUDA, which would train a
GPU run on phone portraits lying on their side. The tag is read from the file's header (PIL's
lazy open, no decode) and the turn is a flip, transpose or rot90 of the decoded tensor, the same
code on either device; all 8 values give PIL's ``exif_transpose`` pixels
(``tests/test_encoded_pipeline.py``). Then, on the same device, each image is brought to the form
``cache.py`` stores: its shorter side resized to the stored side (antialiased bilinear, torch's),
its longer side centre-cropped to ``cache.MAX_ASPECT``, laid landscape (a portrait image
transposed) in a slot whose right edge repeats its last column, with its upright (height, width).
The batched augmentation then works on it exactly as on a cached batch.

Camera photos: torchvision decodes a JPEG at its full size (no DCT scaling), so a batch of 128
twelve-megapixel photos would hold 4.6 GB of pixels at once and take four times longer than needed.
Two bounds keep that in check. On the CPU a JPEG whose shorter side is at least four times the
stored side is decoded by PIL at a reduced DCT scale (``decode.decode_image``, the decoded cache's
own path: the same pixels as the cache), one image at a time. And the JPEGs handed to torchvision
go in groups of at most :data:`DECODE_BYTES` of decoded pixels (their sizes read from each file's
frame header), each group brought to the stored form before the next is decoded.

What torchvision does not decode goes through ``decode.decode_image`` on the CPU, one image at a
time: PNG, WebP, GIF, BMP, TIFF (not JPEGs), and any JPEG the batched call refuses (on the GPU:
what nvJPEG does not support). A file that neither decodes is reported by name and left out.

torchvision 0.29 marks its image decoders deprecated (TorchCodec is to take them over): the decoder
is tried once on a tiny JPEG (:func:`decoder_unavailable`), and where it is gone ``data.pipeline=auto``
falls back to the per-image pipeline with a line saying why.
"""
from __future__ import annotations

import functools
import io
from typing import Optional, Sequence

import numpy as np
import torch
import torchvision.transforms.functional as TF

from .cache import slot_width
from .decode import decode_image
from .errors import UnreadableImage

JPEG_START = b"\xff\xd8\xff"  # SOI and the first marker: every JPEG starts so
ORIENTATION = 0x0112  # the EXIF orientation tag
HEADER_BYTES = 1 << 17  # where the EXIF segment must lie: APP segments are at most 64 KiB each, and come first
DECODE_BYTES = 256 << 20  # decoded pixels held at once by one torchvision call (see the module's docstring)
REDUCED_ON_CPU = 4  # on the CPU, JPEGs with a shorter side of this many stored sides or more go to PIL's draft
# Start-of-frame markers (baseline, extended, progressive, lossless; Huffman or arithmetic): they hold the size.
_FRAME_MARKERS = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


@functools.lru_cache(maxsize=None)
def decoder_unavailable() -> Optional[str]:
    """None when torchvision can decode JPEG bytes here (tried once on a tiny image), else why not."""
    try:
        from PIL import Image
        from torchvision.io import ImageReadMode, decode_jpeg

        buf = io.BytesIO()
        Image.new("RGB", (8, 8), (200, 30, 60)).save(buf, "JPEG")
        data = torch.frombuffer(bytearray(buf.getvalue()), dtype=torch.uint8)
        decode_jpeg([data], mode=ImageReadMode.RGB, apply_exif_orientation=True)
    except Exception as err:  # an ImportError, or torchvision built without its image library
        return f"{type(err).__name__}: {err}"
    return None


def exif_orientation(blob: np.ndarray) -> int:
    """The EXIF orientation tag (1-8) in a JPEG's header; 1 (as stored) when there is none or the
    header cannot be followed. The markers before the image data are walked to the APP1 "Exif"
    segment, whose first directory (IFD0, where PIL's ``exif_transpose`` reads it too) holds the
    tag: a few microseconds, where opening the header with PIL took 120 per image."""
    data = blob[:HEADER_BYTES].tobytes()
    pos = 2  # after SOI
    while pos + 4 <= len(data) and data[pos] == 0xFF:
        marker = data[pos + 1]
        if marker == 0xFF:  # a fill byte before the marker
            pos += 1
            continue
        if marker in (0xD9, 0xDA):  # end of image, start of scan: no EXIF before the pixels
            break
        length = int.from_bytes(data[pos + 2:pos + 4], "big")
        if marker == 0xE1 and data[pos + 4:pos + 10] == b"Exif\0\0":
            return _tiff_orientation(data[pos + 10:pos + 2 + length])
        pos += 2 + length
    return 1


def jpeg_size(blob: np.ndarray) -> Optional[tuple[int, int]]:
    """A JPEG's stored (height, width) from its frame header, walked marker by marker as
    :func:`exif_orientation` walks them; None when the header cannot be followed."""
    pos, end = 2, len(blob)
    while pos + 9 <= end and blob[pos] == 0xFF:
        marker = int(blob[pos + 1])
        if marker == 0xFF:
            pos += 1
            continue
        if marker in (0xD9, 0xDA):
            return None
        if marker in _FRAME_MARKERS:
            height = int(blob[pos + 5]) << 8 | int(blob[pos + 6])
            width = int(blob[pos + 7]) << 8 | int(blob[pos + 8])
            return (height, width) if height and width else None
        pos += 2 + (int(blob[pos + 2]) << 8 | int(blob[pos + 3]))
    return None


def _tiff_orientation(tiff: bytes) -> int:
    """The orientation entry of the first directory of an EXIF (TIFF) block; 1 where there is none."""
    order = {b"II": "little", b"MM": "big"}.get(tiff[:2])
    if order is None or len(tiff) < 8:
        return 1
    ifd = int.from_bytes(tiff[4:8], order)
    count = int.from_bytes(tiff[ifd:ifd + 2], order) if ifd + 2 <= len(tiff) else 0
    for entry in range(ifd + 2, ifd + 2 + 12 * count, 12):
        if entry + 12 > len(tiff):
            break
        if int.from_bytes(tiff[entry:entry + 2], order) == ORIENTATION:
            value = int.from_bytes(tiff[entry + 8:entry + 10], order)  # a SHORT: the value field's first 2 bytes
            return value if value in _TURNS else 1
    return 1


# Each EXIF orientation as tensor ops on (C, H, W), the turns of PIL's ImageOps.exif_transpose.
_TURNS = {
    1: lambda x: x,
    2: lambda x: x.flip(-1),  # mirrored left-right
    3: lambda x: x.flip(-2, -1),  # rotated 180
    4: lambda x: x.flip(-2),  # mirrored top-bottom
    5: lambda x: x.transpose(-2, -1),  # mirrored along the main diagonal
    6: lambda x: torch.rot90(x, -1, (-2, -1)),  # stored rotated 90 counter-clockwise: turned clockwise
    7: lambda x: x.transpose(-2, -1).flip(-2, -1),  # mirrored along the other diagonal
    8: lambda x: torch.rot90(x, 1, (-2, -1)),  # stored rotated 90 clockwise: turned counter-clockwise
}


def upright(image: torch.Tensor, orientation: int) -> torch.Tensor:
    """``image`` (C, H, W) as its EXIF ``orientation`` says it is seen."""
    return _TURNS[orientation](image)


def stored_form(image: torch.Tensor, side: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """An upright uint8 image (C, h, w) as the cache stores it: (C, side, long) landscape -- a
    portrait image transposed --, and its upright (height, width) after the resize and crop."""
    h, w = image.shape[-2:]
    short, long = min(h, w), max(h, w)
    if short != side:
        # torchvision's (and so the cache's) output size for an int: the longer side truncated
        new_long = int(side * long / short)
        image = TF.resize(image, [side, new_long] if h <= w else [new_long, side], antialias=True)
    longest = slot_width(side)
    h, w = image.shape[-2:]
    if max(h, w) > longest:
        image = TF.center_crop(image, [min(h, longest), min(w, longest)])
        h, w = image.shape[-2:]
    return (image.transpose(1, 2) if h > w else image), (int(h), int(w))


def into_slots(images: Sequence[torch.Tensor], uprights: Sequence[tuple[int, int]], side: int
               ) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
    """Stored-form images stacked into one uint8 batch (B, C, side, width), ``width`` the longest
    here, and their upright sizes (B, 2) -- None when every image is a ``side`` square, as a
    cache of squares has none."""
    width = max(img.shape[-1] for img in images)
    first = images[0]
    slots = torch.empty((len(images), first.shape[0], side, width), dtype=torch.uint8, device=first.device)
    for k, img in enumerate(images):
        long = img.shape[-1]
        slots[k, :, :, :long] = img
        if long < width:
            slots[k, :, :, long:] = img[:, :, -1:]  # the edge repeated, as in the cache
    if all(hw == (side, side) for hw in uprights):
        return slots, None
    return slots, torch.tensor(uprights, dtype=torch.int64, device=first.device)


def _pil_pixels(blob: np.ndarray, mode: str, side: int, name: str, device: torch.device) -> torch.Tensor:
    """The one-image path (``decode.decode_image``: PIL, upright, shorter side at ``side``) as (C, h, w)."""
    pixels = np.asarray(decode_image(blob.tobytes(), mode, side, name=name), dtype=np.uint8)
    pixels = pixels[None] if pixels.ndim == 2 else pixels.transpose(2, 0, 1)
    return torch.from_numpy(np.ascontiguousarray(pixels)).to(device)


def _batch_decode(blobs: list[np.ndarray], gray: bool, device: torch.device) -> list[Optional[torch.Tensor]]:
    """Upright uint8 (C, h, w) on ``device`` for each JPEG, in one call; where that call fails (one
    bad file fails it all), one call per image; None for the ones torchvision cannot decode."""
    from torchvision.io import ImageReadMode, decode_jpeg

    mode = ImageReadMode.GRAY if gray else ImageReadMode.RGB
    tensors = [torch.from_numpy(b) for b in blobs]
    try:
        decoded: list[Optional[torch.Tensor]] = list(decode_jpeg(tensors, mode=mode, device=device))
    except RuntimeError:
        decoded = []
        for t in tensors:
            try:
                decoded.append(decode_jpeg([t], mode=mode, device=device)[0])
            except RuntimeError:
                decoded.append(None)
    return [None if x is None else upright(x, exif_orientation(b)) for x, b in zip(decoded, blobs)]


def _groups(jpegs: list[int], sizes: dict[int, Optional[tuple[int, int]]], channels: int) -> list[list[int]]:
    """``jpegs`` in order, cut so that each group's decoded pixels stay within DECODE_BYTES (an image
    larger than that alone makes a group; one whose size is unknown counts as an eighth of it)."""
    groups: list[list[int]] = [[]]
    held = 0
    for k in jpegs:
        hw = sizes.get(k)
        need = hw[0] * hw[1] * channels if hw else DECODE_BYTES // 8
        if groups[-1] and held + need > DECODE_BYTES:
            groups.append([])
            held = 0
        groups[-1].append(k)
        held += need
    return [g for g in groups if g]


def decode_batch(blobs: Sequence[Optional[np.ndarray]], names: Sequence[str], channels: int, side: int,
                 device: torch.device) -> tuple[list[Optional[tuple[torch.Tensor, tuple[int, int]]]], list[str]]:
    """Each image of the batch in stored form with its upright size (``stored_form``), or None
    where it cannot be decoded (or its bytes are None); and one line per such image."""
    out: list = [None] * len(blobs)
    skipped: list[str] = []
    jpegs = [k for k, b in enumerate(blobs) if b is not None and bytes(b[:3]) == JPEG_START]
    sizes = {k: jpeg_size(blobs[k]) for k in jpegs}
    if device.type == "cpu":  # large photos: PIL's reduced-scale decode, below, as the cache does
        jpegs = [k for k in jpegs if not (sizes[k] and min(sizes[k]) >= REDUCED_ON_CPU * side)]
    for group in _groups(jpegs, sizes, channels):
        decoded = _batch_decode([blobs[k] for k in group], channels == 1, device)
        for k, image in zip(group, decoded):
            if image is not None:
                out[k] = stored_form(image, side)
    mode = "L" if channels == 1 else "RGB"
    for k, blob in enumerate(blobs):
        if blob is None or out[k] is not None:
            continue  # None: the caller names it (bytes that failed their check)
        try:
            image = _pil_pixels(blob, mode, side, names[k], device)
        except UnreadableImage as err:
            skipped.append(str(err))
            continue
        out[k] = stored_form(image, side)
    return out, skipped


def decode_into_slots(blobs: Sequence[Optional[np.ndarray]], names: Sequence[str], channels: int, side: int,
                      device: torch.device, size: int = 0
                      ) -> tuple[Optional[tuple[torch.Tensor, Optional[torch.Tensor], list[int]]], list[str]]:
    """A batch's bytes as one uint8 batch of slots with sizes (``into_slots``), the images that could
    not be decoded replaced by repeats of decoded ones so that the batch keeps its size -- ``size``,
    else ``len(blobs)`` -- (as ``loaders._collate`` explains), and ``fill``: the batch position each slot came from. None
    instead when no image decodes; and the lines naming what could not be."""
    decoded, skipped = decode_batch(blobs, names, channels, side, device)
    good = [k for k, item in enumerate(decoded) if item is not None]
    if not good:
        return None, skipped
    fill = [good[k % len(good)] for k in range(size or len(blobs))]
    images, sizes = into_slots([decoded[k][0] for k in fill], [decoded[k][1] for k in fill], side)
    return (images, sizes, fill), skipped

