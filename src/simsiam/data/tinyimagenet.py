"""Tiny-ImageNet in its own layout: 64x64 JPEGs, labelled train and val splits.

    <dir>/wnids.txt                       one WordNet id a line: the classes
    <dir>/words.txt                       "<wnid>\\t<names>" (for readable class names)
    <dir>/train/<wnid>/images/*.JPEG      training images by class
    <dir>/val/images/*.JPEG               validation images ...
    <dir>/val/val_annotations.txt         ... labelled by "<file>\\t<wnid>\\t<box>" lines

Real copies are untidy: class folders missing from wnids.txt, stray files such as ``.DS_Store``,
CRLF line ends in some annotation lines, grayscale JPEGs. Classes are the union of wnids.txt and
the train folders (sorted), stray files are ignored, every line is stripped, and every image is
decoded as RGB. The "test" split is the labelled val split (Tiny-ImageNet's own test images have
no labels), so the kNN monitor's default ``data.eval_split=test`` works.
"""
from __future__ import annotations

import os
from typing import Optional

from .files import ImageFiles, list_images
from .search import check_split, not_found, require_dir

HOW = ("pass --data-dir / data.data_dir= pointing to the extracted tiny-imagenet-200/ directory (holding "
       "wnids.txt, train/<wnid>/images/ and val/images/ with val/val_annotations.txt)")


def _lines(path: str) -> list[str]:
    with open(path, encoding="utf-8", errors="replace") as fh:
        return [line.strip() for line in fh if line.strip()]


def _classes(root: str) -> list[str]:
    """The union of wnids.txt and the train class folders (those with an images/ folder), sorted."""
    wnids_file = os.path.join(root, "wnids.txt")
    listed = set(_lines(wnids_file)) if os.path.isfile(wnids_file) else set()
    train = os.path.join(root, "train")
    folders = {e.name for e in os.scandir(train) if e.is_dir() and not e.name.startswith(".")} \
        if os.path.isdir(train) else set()
    return sorted(listed | folders)


def class_names(root: str, wnids: list[str]) -> list[str]:
    """Readable names from words.txt (its first synonym), the wnid itself where it has none."""
    path = os.path.join(root, "words.txt")
    words = dict(line.split("\t", 1) for line in _lines(path) if "\t" in line) if os.path.isfile(path) else {}
    return [words.get(w, w).split(",")[0].strip() for w in wnids]


def _train(root: str, classes: list[str]) -> tuple[list[str], list[int]]:
    paths: list[str] = []
    labels: list[int] = []
    for label, wnid in enumerate(classes):
        folder = os.path.join(root, "train", wnid, "images")
        found = list_images(folder) if os.path.isdir(folder) else []
        paths += found
        labels += [label] * len(found)
    return paths, labels


def _val(root: str, classes: list[str]) -> tuple[list[str], list[int]]:
    """The annotated val images that exist on disk, in file-name order."""
    index = {wnid: i for i, wnid in enumerate(classes)}
    images = os.path.join(root, "val", "images")
    labelled: dict[str, int] = {}
    for line in _lines(os.path.join(root, "val", "val_annotations.txt")):
        fields = line.split("\t")
        if len(fields) >= 2 and fields[1] in index:
            labelled[fields[0]] = index[fields[1]]
    on_disk = {os.path.basename(p): p for p in list_images(images)}
    names = sorted(n for n in labelled if n in on_disk)
    return [on_disk[n] for n in names], [labelled[n] for n in names]


def load_tinyimagenet(split: str, data_dir: Optional[str] = None) -> ImageFiles:
    """Splits "train" (500 images a class) and "val" (50 a class; also as "test")."""
    check_split("tinyimagenet", split, ("train", "val", "test"))
    root = require_dir("tinyimagenet", data_dir, HOW)
    classes = _classes(root)
    if split == "train":
        paths, labels = _train(root, classes)
        where = os.path.join(root, "train")
    else:
        annotations = os.path.join(root, "val", "val_annotations.txt")
        if not os.path.isfile(annotations):
            raise not_found("tinyimagenet", "the val split's labels", [(annotations, "does not exist")], HOW)
        paths, labels = _val(root, classes)
        where = os.path.join(root, "val", "images")
    if not paths:
        raise not_found("tinyimagenet", f"images for split {split!r}", [(where, "no labelled images")], HOW)
    return ImageFiles(paths, labels, "tinyimagenet", len(classes), classes=class_names(root, classes))
