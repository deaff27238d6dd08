"""gpu_figures.py's ``jpeg_decode`` part: JPEGs decoded in batches on the GPU against the CPU, and the
encoded pipeline's views (data/encoded_loader.py) on each, images/s.

The JPEGs are made on the fly from Fashion-MNIST: each 28x28 image upscaled (bicubic) to 500x375,
an ImageNet photo's typical size, in colour (a gradient tinted by the image), quality 90, written
to a folder under ``--work``. Figures, each the median of several timed rounds after one untimed:

* ``decode``: one ``torchvision.io.decode_jpeg(list, device=...)`` call on a batch of 256 JPEGs
  (synchronised on CUDA), on ``cpu`` and on the run's device;
* ``views``: one epoch of ``EncodedBatchLoader`` (bytes from the store, the decode, the stored form
  at 224 px and two 224-px ImageNet-recipe views) on the same folder, on each.

Run by ``gpu_figures.py --part jpeg_decode``; importable (``measure(opts)``) for a dry run on the CPU.
"""
from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

BATCH = 256


def make_jpegs(data_dir: Path, folder: Path, count: int, size: tuple[int, int]) -> list[Path]:
    import numpy as np
    from PIL import Image

    from simsiam.data import load_dataset

    images = load_dataset("fmnist", "train", str(data_dir)).images[:count, 0].numpy()
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    w, h = size
    tint = np.linspace(0.4, 1.0, w, dtype=np.float32)[None, :, None] * np.array([1.0, 0.8, 0.6], dtype=np.float32)
    for i, pixels in enumerate(images):
        gray = np.asarray(Image.fromarray(pixels).resize((w, h), Image.Resampling.BICUBIC), dtype=np.float32)
        colour = np.clip(gray[:, :, None] * tint + 30, 0, 255).astype(np.uint8)
        path = folder / f"{i:05d}.jpg"
        Image.fromarray(colour).save(path, quality=90)
        paths.append(path)
    return paths


def _median_rate(fn, images: int, rounds: int, sync) -> float:
    fn()  # untimed: allocations, nvJPEG's handles, the page cache
    sync()
    rates = []
    for _ in range(rounds):
        started = time.perf_counter()
        fn()
        sync()
        rates.append(images / (time.perf_counter() - started))
    return statistics.median(rates)


def measure(opts: argparse.Namespace) -> dict:
    import torch
    from torchvision.io import ImageReadMode, decode_jpeg

    from simsiam import get_preset
    from simsiam.data.encoded_loader import EncodedBatchLoader
    from simsiam.data.encoded_store import stored
    from simsiam.data.files import ImageFiles

    count, size, rounds = (32, (100, 75), 2) if opts.dry_run else (2 * BATCH, (500, 375), 3)
    batch = 16 if opts.dry_run else BATCH
    image_size = 32 if opts.dry_run else 224
    paths = make_jpegs(opts.data_dir, opts.work / "jpegs", count, size)
    blobs = [torch.frombuffer(bytearray(p.read_bytes()), dtype=torch.uint8) for p in paths[:batch]]
    devices = ["cpu"] + ([opts.device] if opts.device != "cpu" else [])
    result = {"jpegs": count, "jpeg_size": list(size), "mean_jpeg_kib": round(sum(p.stat().st_size for p in paths) / count / 1024, 1),
              "batch": batch, "views_image_size": image_size, "decode_images_per_s": {}, "views_images_per_s": {}}
    files = ImageFiles([str(p) for p in paths], [0] * count, "fmnist_jpegs", 1)  # colour, ImageNet's mean and std
    store = stored(files, opts.work / "store", progress=False)
    for device in devices:
        dev = torch.device(device)
        sync = (lambda: torch.cuda.synchronize(dev)) if dev.type == "cuda" else (lambda: None)
        result["decode_images_per_s"][device] = round(_median_rate(
            lambda: decode_jpeg(blobs, mode=ImageReadMode.RGB, apply_exif_orientation=True, device=dev),
            len(blobs), rounds, sync), 1)
        cfg = get_preset("small")
        cfg.data.image_size, cfg.optim.batch_size = image_size, batch
        loader = EncodedBatchLoader(store, cfg, 2, dev)

        def one_epoch():
            for b in loader.epoch(0):
                b["views"][1].sum().item()  # waits for the views on the device

        result["views_images_per_s"][device] = round(_median_rate(one_epoch, len(loader) * batch, rounds, sync), 1)
    return result


def summary_row(s: dict, status: str) -> str:
    """gpu_figures' table row for this part."""
    j = s.get("jpeg_decode")
    figures = ""
    if j:
        dec = ", ".join(f"{k} {v:.0f}" for k, v in j["decode_images_per_s"].items())
        views = ", ".join(f"{k} {v:.0f}" for k, v in j["views_images_per_s"].items())
        figures = (f"decode_jpeg of {j['batch']} JPEGs ({j['jpeg_size'][0]}x{j['jpeg_size'][1]}, {j['mean_jpeg_kib']} KiB "
                   f"each) in one call, img/s: {dec}; encoded pipeline's two {j['views_image_size']}-px views, img/s: {views}")
    return f"| jpeg_decode (Fashion-MNIST made into JPEGs) | {status} | {figures} |"
