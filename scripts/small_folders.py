"""Build small labelled image folders (``train/<class>/*.png``, ``test/<class>/*.png``) that the
recipes were NOT tuned on, to check that a preset beats raw pixels on a user's own folder
(docs/RECIPES.md, "Folders it was not tuned on").

    python scripts/small_folders.py --tiny tiny-imagenet-200 --out data/folders

- ``tiny10-color-32``: 10 Tiny-ImageNet classes (the first ten wnids of ``wnids.txt``), colour,
  resized to 32 px; 500 train / 50 val images a class.
- ``tiny10-gray-28``: 10 other Tiny-ImageNet classes, grayscale, 28 px (an 8-bit folder of the
  Fashion-MNIST kind, of natural images).
- ``digits-28``: scikit-learn's 8x8 digits upscaled to 28 px (1,497 train / 300 test, the
  last 300 are the test split), a small grayscale folder of another domain.

Nothing is downloaded: Tiny-ImageNet comes from a local copy, digits with scikit-learn.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image


def _save(img: Image.Image, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)


def tiny_subset(tiny: Path, out: Path, wnids: list[str], side: int, mode: str) -> None:
    """``wnids``' train images as ``train/``, their val images (by val_annotations.txt) as ``test/``."""
    for wnid in wnids:
        for src in sorted((tiny / "train" / wnid / "images").glob("*.JPEG")):
            with Image.open(src) as im:
                _save(im.convert(mode).resize((side, side), Image.BILINEAR), out / "train" / wnid / f"{src.stem}.png")
    wanted = set(wnids)
    for line in (tiny / "val" / "val_annotations.txt").read_text().splitlines():
        parts = line.strip().split("\t")
        if len(parts) >= 2 and parts[1] in wanted:
            with Image.open(tiny / "val" / "images" / parts[0]) as im:
                _save(im.convert(mode).resize((side, side), Image.BILINEAR),
                      out / "test" / parts[1] / f"{Path(parts[0]).stem}.png")


def digits_folder(out: Path) -> None:
    """scikit-learn's digits at 28 px; the last 300 images are the test split."""
    from sklearn.datasets import load_digits

    d = load_digits()
    images = (d.images / 16.0 * 255).astype(np.uint8)
    for i, (img, label) in enumerate(zip(images, d.target)):
        split = "test" if i >= len(images) - 300 else "train"
        _save(Image.fromarray(img).resize((28, 28), Image.BILINEAR), out / split / str(label) / f"{i:04d}.png")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tiny", type=Path, required=True, help="the extracted tiny-imagenet-200/")
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args()
    wnids = [w.strip() for w in (args.tiny / "wnids.txt").read_text().splitlines() if w.strip()]
    tiny_subset(args.tiny, args.out / "tiny10-color-32", wnids[:10], 32, "RGB")
    tiny_subset(args.tiny, args.out / "tiny10-gray-28", wnids[10:20], 28, "L")
    digits_folder(args.out / "digits-28")
    for name in ("tiny10-color-32", "tiny10-gray-28", "digits-28"):
        root = args.out / name
        train, test = (sum(1 for _ in root.glob(f"{split}/*/*.png")) for split in ("train", "test"))
        print(f"{root}: {train} train, {test} test")


if __name__ == "__main__":
    main()
