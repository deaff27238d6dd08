"""The decoded-image cache's build speed with the reduced-scale JPEG decode (data/decode.py) against
a full decode followed by the same resize, on the same cores, one after the other, and how far
their pixels differ.

    PYTHONPATH=src OMP_NUM_THREADS=1 python scripts/decode_bench.py data/photos/real --side 64
    PYTHONPATH=src python scripts/decode_bench.py --make-standin data/photos/standin --count 200

``--make-standin`` writes stand-ins for camera photos where none are at hand: Tiny-ImageNet
training photos upscaled to 3000x4000 (bicubic), JPEG quality 90, every other one stored sideways
(4000x3000 pixels with EXIF orientation 6, as phones write portraits). They are smoother than
real photos, whose larger entropy-coded data a reduced-scale decode still has to read in full:
quote both kinds when both are available. Photos go under the git-ignored ``data/``; never commit them.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from simsiam.data import ImageFiles, decode
from simsiam.data.cache import build
from simsiam.data.files import list_images

TINY = "/work/main/data/tiny-imagenet-200/train"


def make_standin(out: Path, count: int, tiny: str) -> None:
    out.mkdir(parents=True, exist_ok=True)
    sources = list_images(tiny)[:: max(1, len(list_images(tiny)) // count)][:count]
    exif = Image.Exif()
    exif[0x0112] = 6
    for i, src in enumerate(sources):
        with Image.open(src) as im:
            big = im.convert("RGB").resize((3000, 4000), Image.Resampling.BICUBIC)
        if i % 2:
            # stored as a phone does: the sensor's landscape array, turned upright by the tag
            big.transpose(Image.Transpose.ROTATE_90).save(out / f"p{i:04d}.jpg", quality=90, exif=exif.tobytes())
        else:
            big.save(out / f"p{i:04d}.jpg", quality=90)
    print(f"wrote {len(sources)} stand-in photos (3000x4000 upscaled Tiny-ImageNet, q90) to {out}")


def timed_build(files: ImageFiles, side: int, workers: int, reduced: bool) -> tuple[float, np.ndarray]:
    decode.REDUCED_SCALE = reduced  # the decode pool's workers are forked after this: they inherit it
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "images.npy"
        start = time.perf_counter()
        build(files, side, path, workers, progress=True)
        seconds = time.perf_counter() - start
        return seconds, np.load(path)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("folder", nargs="?", help="a folder of photos (searched recursively)")
    p.add_argument("--side", type=int, default=64, help="the cache's stored side (data.cache_side)")
    p.add_argument("--workers", type=int, default=len(os.sched_getaffinity(0)), help="decode processes")
    p.add_argument("--repeat", type=int, default=2, help="rounds of (reduced, full); the best of each is kept")
    p.add_argument("--make-standin", metavar="DIR", help="write stand-in photos into DIR and stop")
    p.add_argument("--count", type=int, default=200)
    p.add_argument("--tiny", default=TINY, help="Tiny-ImageNet's train/ folder, for --make-standin")
    args = p.parse_args()
    if args.make_standin:
        make_standin(Path(args.make_standin), args.count, args.tiny)
        return 0
    if not args.folder:
        p.error("give a FOLDER of photos, or --make-standin DIR")
    paths = list_images(args.folder)
    with Image.open(paths[0]) as im:
        first = im.size
    files = ImageFiles(paths, [0] * len(paths), "photos", 1)
    best = {True: float("inf"), False: float("inf")}
    pixels = {}
    for _ in range(args.repeat):
        for reduced in (True, False):
            seconds, pixels[reduced] = timed_build(files, args.side, args.workers, reduced)
            best[reduced] = min(best[reduced], seconds)
    diff = np.abs(pixels[True].astype(np.int16) - pixels[False].astype(np.int16))
    rate = {k: len(paths) / v for k, v in best.items()}
    print(f"{len(paths)} photos in {args.folder} (first {first[0]}x{first[1]}), stored side {args.side}, "
          f"{args.workers} decode process(es), best of {args.repeat}:")
    print(f"  reduced-scale decode: {rate[True]:7.1f} images/s")
    print(f"  full decode + resize: {rate[False]:7.1f} images/s")
    print(f"  speed-up {rate[True] / rate[False]:.2f}x; pixels differ by mean {diff.mean():.3f}, "
          f"max {diff.max()} (of 255)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
