"""The decoded-image cache of a folder: its build time, its size, and the batched pipeline's images/s on it.

    PYTHONPATH=src python scripts/whole_photos_bench.py FOLDER --side 64 --cache-dir /tmp/cache [--batches 40]
    python scripts/whole_photos_bench.py --make-4x3 TINY_TRAIN OUT --classes 20  # OUT/train/<class>: 4:3, 3:4

FOLDER is laid out as FOLDER/train/<class>/<image> (dataset imagefolder).

Run with this checkout's ``src`` and with another's (say ``main``, whose cache holds centre
squares) on the same folder to compare the two layouts side by side: the script uses only what both
have. The pipeline is timed as training runs it -- ``BatchedViewLoader`` with the
``tinyimagenet`` preset's augmentation at ``--side``, two views per image, on the CPU with the
threads torch has -- after one warm-up batch; images/s counts source images.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path


def make_4x3(tiny_train: Path, out: Path, classes: int) -> None:
    """Tiny-ImageNet's 64 x 64 JPEGs resized to 85 x 64 (two in three) and 64 x 85 (one in three):
    stand-ins for a folder of 4:3 photos, at the same shorter side."""
    from PIL import Image

    for k, cls in enumerate(sorted(p.name for p in tiny_train.iterdir() if p.is_dir())[:classes]):
        (out / "train" / cls).mkdir(parents=True, exist_ok=True)
        for j, path in enumerate(sorted((tiny_train / cls / "images").glob("*.JPEG"))):
            size = (64, 85) if (k + j) % 3 == 2 else (85, 64)  # (width, height): portrait / landscape
            photo = Image.open(path).convert("RGB").resize(size, Image.BILINEAR)
            photo.save(out / "train" / cls / path.name, quality=90)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("out", type=Path, nargs="?")
    parser.add_argument("--make-4x3", action="store_true")
    parser.add_argument("--classes", type=int, default=20)
    parser.add_argument("--side", type=int, default=64)
    parser.add_argument("--cache-dir", type=Path)
    parser.add_argument("--batches", type=int, default=40)
    parser.add_argument("--batch", type=int, default=256)
    args = parser.parse_args()
    if args.make_4x3:
        make_4x3(args.folder, args.out, args.classes)
        return

    import torch

    from simsiam import apply_overrides, get_preset
    from simsiam.data import load_dataset
    from simsiam.data.cache import cached
    from simsiam.data.loaders import BatchedViewLoader

    files = load_dataset("imagefolder", "train", str(args.folder))
    start = time.perf_counter()
    data = cached(files, args.side, args.cache_dir, progress=False)
    built = time.perf_counter() - start
    npy = next(args.cache_dir.glob("*.npy"))
    sizes = getattr(data, "sizes", None)
    print(f"{len(data)} images; cache opened or built in {built:.1f} s; array {tuple(data.images.shape)}, "
          f"{npy.stat().st_size / 2**20:.1f} MiB; sizes: {'none (squares)' if sizes is None else 'whole photos'}")

    cfg = apply_overrides(get_preset("tinyimagenet"), [f"data.image_size={args.side}",
                                                       f"optim.batch_size={args.batch}"])
    loader = BatchedViewLoader(data, cfg, 2, torch.device("cpu"))
    batches = loader.epoch(0)
    next(batches)  # warm-up: the kernel's first call, the pages of the mapping
    start = time.perf_counter()
    for _ in range(args.batches):
        next(batches)
    elapsed = time.perf_counter() - start
    print(f"batched pipeline ({loader.describe()}, {torch.get_num_threads()} thread(s)): "
          f"{args.batches * args.batch / elapsed:.0f} images/s over {args.batches} batches of {args.batch}")


if __name__ == "__main__":
    main()
