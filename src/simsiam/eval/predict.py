"""Classifying a folder of images with a fine-tuned model (``simsiam predict``).

Every image under the folder (recursive) is decoded with the model's channel count, resized and
centre-cropped to its fine-tuning size as its test images were, normalised as its fine-tuning data were, and classified.
The CSV has one row per readable image: its path, the predicted class and its probability, then
the probability of every class. Where an image's parent folder is named after a class (a test split
laid out as ``<class>/<image>``), the row also has that class as ``truth``, and the accuracy over
those images is returned. Unreadable files are skipped and listed, never fatal; the CSV is written
atomically.
"""
from __future__ import annotations

import csv
import io
import os
import time
from pathlib import Path

import torch

from ..artifacts.checkpoint import write_atomic
from ..data.names import text_bytes
from ..models import input_channels
from .classifier import load_classifier
from .embed import folder_images
from .features import extract_features
from .normalisation import training_normalisation


@torch.no_grad()
def predict_folder(model_path: str | Path, data_dir: str | Path, out_csv: str | Path, *, device: str = "cpu",
                   batch_size: int = 256, num_workers: int = 0) -> dict:
    """Write the predictions CSV described in the module doc; returns counts, accuracy and paths."""
    t0 = time.perf_counter()
    dev = torch.device(device)
    classifier, meta, cfg = load_classifier(model_path, dev)
    channels = input_channels(classifier.backbone)
    if meta.get("mean") and meta.get("std"):
        mean, std = tuple(meta["mean"]), tuple(meta["std"])
    else:
        mean, std = training_normalisation(cfg, channels)
    classes = list(meta.get("classes") or [str(i) for i in range(classifier.num_features)])
    size = int(meta.get("image_size") or cfg.data.image_size or 224)
    images = folder_images(data_dir, channels, mean, std)
    # The test images of its fine-tune were whole squares (in memory, or a folder in the image cache)
    # or the ImageNet protocol's centre crop (files read one by one): new images are prepared alike.
    logits, _, kept, unreadable = extract_features(classifier, images, device=dev, batch_size=batch_size,
                                                   image_size=size, num_workers=num_workers,
                                                   margin=meta.get("test_images") == "files")
    probs = torch.softmax(logits.float(), dim=1)
    top_p, top = probs.max(dim=1)
    index = {name: i for i, name in enumerate(classes)}
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["path", "predicted", "probability", "truth"] + [f"p_{c}" for c in classes])
    correct = judged = 0
    for row, i in enumerate(kept):
        path = images.paths[i]
        truth = os.path.basename(os.path.dirname(path))
        truth = truth if truth in index else ""
        if truth:
            judged += 1
            correct += int(index[truth] == int(top[row]))
        writer.writerow([path, classes[int(top[row])], f"{float(top_p[row]):.6f}", truth]
                        + [f"{float(p):.6f}" for p in probs[row]])
    write_atomic(out_csv, lambda fh: fh.write(text_bytes(buffer.getvalue())))  # names that are not UTF-8 as their bytes
    return {"images": len(images), "predicted": len(kept), "unreadable": list(unreadable), "out": str(out_csv),
            "judged": judged, "accuracy": 100.0 * correct / judged if judged else None, "classes": len(classes),
            "image_size": size, "time_s": round(time.perf_counter() - t0, 2)}
