"""Where a run's kNN accuracy comes from: per class, against standardised pixels, and whether
centring or standardising the features would change it (docs/RECIPES.md, section 5).

    python scripts/knn_by_class.py runs/demo

Uses the run's dataset and held-out split, k = 200 and T = 0.1 as the monitor does. The pixel
column standardises each pixel with the training split's mean and std (the package's baseline
standardises with the dataset's single mean and std, so the two differ a little).
"""
from __future__ import annotations

import argparse

import torch

from simsiam.data import load_dataset
from simsiam.eval import eval_mode, extract_features
from simsiam.eval.knn import knn_predict
from simsiam.eval.pretrained import held_out_split, load_pretrained
from simsiam.eval.visualize import class_names


def predictions(queries: torch.Tensor, bank: torch.Tensor, bank_labels: torch.Tensor, classes: int) -> torch.Tensor:
    return knn_predict(queries, bank, bank_labels, classes, k=200, t=0.1).argmax(1)


def standardise(queries: torch.Tensor, bank: torch.Tensor, centre_only: bool = False):
    mean, std = bank.mean(0), bank.std(0) + 1e-6
    if centre_only:
        return queries - mean, bank - mean
    return (queries - mean) / std, (bank - mean) / std


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", help="a run directory or checkpoint")
    args = parser.parse_args()
    model, cfg = load_pretrained(args.run)
    name = cfg.data.dataset
    bank_set = load_dataset(name, "train", cfg.data.data_dir)
    query_set = load_dataset(name, held_out_split(cfg, name), cfg.data.data_dir)
    classes = max(bank_set.num_classes, query_set.num_classes)
    kw = dict(device=torch.device("cpu"), image_size=cfg.data.image_size)
    with eval_mode(model.backbone):
        bank, bank_y, _, _ = extract_features(model.backbone, bank_set, **kw)
        query, query_y, _, _ = extract_features(model.backbone, query_set, **kw)

    for label, (q, b) in (("as they are", (query, bank)), ("centred", standardise(query, bank, centre_only=True)),
                          ("standardised", standardise(query, bank))):
        acc = (predictions(q, b, bank_y, classes) == query_y).float().mean().item() * 100
        print(f"kNN on the features {label:13s} {acc:6.2f}%")

    ours = predictions(query, bank, bank_y, classes)
    pixels = predictions(*standardise(pixel_rows(query_set), pixel_rows(bank_set)), bank_y, classes)
    names = class_names(name, query_set, classes)
    print(f"\n{'class':>24s} {'features':>9s} {'std. pixels':>12s}")
    for c in range(classes):
        mask = query_y == c
        if mask.any():
            print(f"{names[c]:>24s} {acc_of(ours, mask, c):8.1f}% {acc_of(pixels, mask, c):11.1f}%")
    print(f"{'all':>24s} {acc_of(ours, None, query_y):8.2f}% {acc_of(pixels, None, query_y):11.2f}%")


def pixel_rows(dataset) -> torch.Tensor:
    """Every image as a row of float pixels in [0, 1] (in-memory datasets: Fashion-MNIST, digits, caches)."""
    images = getattr(dataset, "images", None)
    if images is None:
        raise SystemExit(f"{dataset.name} is not held in memory; this script compares pixels of in-memory datasets")
    return images.flatten(1).float() / 255.0


def acc_of(pred: torch.Tensor, mask, target) -> float:
    if mask is None:
        return (pred == target).float().mean().item() * 100
    return (pred[mask] == target).float().mean().item() * 100


if __name__ == "__main__":
    main()
