"""Pictures of a representation: a 2-D map of the embeddings and a nearest-neighbour retrieval grid.

* ``embedding_map.png``: pooled backbone features of the test split (l2-normalised, as kNN sees
  them) projected to 2-D by PCA or t-SNE, one colour per class, a legend with the class names.
* ``retrieval.png``: test images (first column) and their top-k training images by cosine
  similarity of pooled features; each tile captioned with its label, a neighbour framed green
  when its label matches the query's and red when not.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..data import InMemoryImages, UnreadableImage, load_dataset
from ..data.subset import subset
from .features import eval_mode, extract_features
from .pretrained import load_pretrained

# Class names of the datasets whose labels are bare integers on disk.
CLASS_NAMES: dict[str, list[str]] = {
    "fmnist": ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
               "Ankle boot"],
    "cifar10": ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"],
    "stl10": ["airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck"],
    "digits": [str(i) for i in range(10)],
}
MATCH_COLOUR, MISMATCH_COLOUR, QUERY_COLOUR = "#2ca02c", "#d62728", "#1f77b4"


def class_names(dataset_name: str, dataset, num_classes: int) -> list[str]:
    """Names for labels 0..num_classes-1: the dataset's own (image folders), known ones, else the numbers."""
    own = list(getattr(dataset, "classes", []) or [])
    if len(own) >= num_classes > 0:
        return own
    known = CLASS_NAMES.get(dataset_name, [])
    if len(known) >= num_classes:
        return known
    return [str(i) for i in range(num_classes)]


def label_name(label: int, names: Sequence[str]) -> str:
    return names[label] if 0 <= label < len(names) else ("unlabelled" if label < 0 else str(label))


def project_2d(features: torch.Tensor, method: str = "pca", seed: int = 0) -> np.ndarray:
    """``(N, 2)`` coordinates of l2-normalised ``features`` by PCA or t-SNE (cosine distances)."""
    x = F.normalize(features.float(), dim=1).numpy()
    if len(x) < 3:
        raise ValueError(f"a 2-D map needs at least 3 images, got {len(x)}")
    if method == "pca":
        from sklearn.decomposition import PCA

        return PCA(n_components=2, random_state=seed).fit_transform(x)
    if method == "tsne":
        from sklearn.manifold import TSNE

        perplexity = min(30.0, (len(x) - 1) / 3)  # t-SNE needs perplexity < N
        return TSNE(n_components=2, init="pca", metric="cosine", perplexity=perplexity,
                    random_state=seed).fit_transform(x)
    raise ValueError(f"unknown projection method {method!r}; choose 'pca' or 'tsne'")


def plot_embedding_map(xy: np.ndarray, labels: np.ndarray, names: Sequence[str], path: Path, title: str) -> Path:
    """Scatter plot of ``xy`` coloured by label, with a legend of class names."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display needed
    import matplotlib.pyplot as plt

    classes = sorted(set(int(c) for c in labels))
    cmap = plt.get_cmap("tab10" if len(classes) <= 10 else "tab20" if len(classes) <= 20 else "turbo")
    fig, ax = plt.subplots(figsize=(8, 7))
    for n, c in enumerate(classes):
        sel = labels == c
        colour = cmap(n % cmap.N) if len(classes) <= 20 else cmap(n / max(1, len(classes) - 1))
        ax.scatter(xy[sel, 0], xy[sel, 1], s=4, alpha=0.6, color=colour, label=label_name(c, names), linewidths=0)
    ax.set_title(title)
    ax.set_xticks([])
    ax.set_yticks([])
    if len(classes) <= 30:
        ax.legend(markerscale=4, fontsize=8, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=150)
    plt.close(fig)
    return path


def tile(dataset, index: int, size: int = 96) -> np.ndarray:
    """The image as a uint8 array for display: (H, W) grey or (H, W, 3); a grey square if unreadable."""
    if isinstance(dataset, InMemoryImages):
        img = dataset.square_images(torch.tensor([index]))[0].permute(1, 2, 0).numpy()
        return img[..., 0] if img.shape[-1] == 1 else img
    try:
        pil, _ = dataset[index]
    except UnreadableImage:
        return np.full((size, size), 128, dtype=np.uint8)
    pil.thumbnail((size, size))
    return np.asarray(pil)


def nearest_neighbours(queries: torch.Tensor, bank: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Cosine similarities and indices ``(Q, k)`` of each query's top-k bank entries, best first."""
    sim = F.normalize(queries.float(), dim=1) @ F.normalize(bank.float(), dim=1).T
    return sim.topk(min(k, bank.shape[0]), dim=1)


def plot_retrieval(query_set, query_idx: Sequence[int], query_labels: Sequence[int], bank_set,
                   nn_idx: np.ndarray, nn_sims: np.ndarray, bank_labels: np.ndarray, names: Sequence[str],
                   path: Path, title: str) -> Path:
    """Grid: one row per query (first column), then its neighbours, framed green (same label) or red."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows, cols = len(query_idx), 1 + nn_idx.shape[1]
    fig, axes = plt.subplots(rows, cols, figsize=(1.3 * cols, 1.45 * rows), squeeze=False)
    for r, (qi, qy) in enumerate(zip(query_idx, query_labels)):
        _show(axes[r, 0], tile(query_set, qi), f"query: {label_name(qy, names)}", QUERY_COLOUR)
        for c, (bi, s) in enumerate(zip(nn_idx[r], nn_sims[r]), start=1):
            by = int(bank_labels[bi])
            colour = MATCH_COLOUR if by == qy and qy >= 0 else MISMATCH_COLOUR
            _show(axes[r, c], tile(bank_set, int(bi)), f"{label_name(by, names)} {s:.2f}", colour)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _show(ax, img: np.ndarray, caption: str, frame: str) -> None:
    ax.imshow(img, cmap="gray" if img.ndim == 2 else None, vmin=0, vmax=255)
    ax.set_title(caption, fontsize=6, pad=2)
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_edgecolor(frame)
        spine.set_linewidth(3)


def visualize(checkpoint: str | Path, out_dir: str | Path, *, method: str = "pca", limit: int = 5000,
              queries: int = 8, k: int = 8, bank_limit: int = 0, dataset: Optional[str] = None,
              data_dir: Optional[str] = None, device: str = "cpu", seed: int = 0) -> dict:
    """Write ``embedding_map.png`` (``limit`` test images) and ``retrieval.png`` (``queries`` test
    images, their ``k`` nearest training images) for a checkpoint. Returns the paths and counts."""
    if limit < 3 or queries < 1 or k < 1:
        raise ValueError(f"need limit >= 3, queries >= 1 and k >= 1; got limit={limit}, queries={queries}, k={k}")
    t_start = time.perf_counter()
    dev = torch.device(device)
    model, cfg = load_pretrained(checkpoint, dev)
    name = dataset or cfg.data.dataset
    ddir = data_dir if data_dir is not None else cfg.data.data_dir
    test_set = subset(load_dataset(name, "test", ddir), limit)
    bank_set = subset(load_dataset(name, "train", ddir), bank_limit)
    kw = dict(device=dev, image_size=cfg.data.image_size if name == cfg.data.dataset else 0)
    with eval_mode(model.backbone):
        test_x, test_y, test_kept, _ = extract_features(model.backbone, test_set, **kw)
        bank_x, bank_y, bank_kept, _ = extract_features(model.backbone, bank_set, **kw)
    num_classes = max(test_set.num_classes, bank_set.num_classes)
    names = class_names(name, test_set, num_classes)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    xy = project_2d(test_x, method, seed)
    map_path = plot_embedding_map(xy, test_y.numpy(), names, out / "embedding_map.png",
                                  f"{Path(checkpoint).name}: {name} test, {len(test_x)} images, {method.upper()} "
                                  "of pooled backbone features")

    rng = np.random.default_rng(seed)
    picks = np.sort(rng.choice(len(test_x), size=min(queries, len(test_x)), replace=False))
    sims, idx = nearest_neighbours(test_x[picks], bank_x, k)
    bank_pos = np.asarray(bank_kept)[idx.numpy()]  # rows of bank_x -> indices in bank_set
    query_pos = [test_kept[p] for p in picks]
    agree = float((bank_y[idx] == test_y[picks][:, None]).float().mean()) * 100
    retrieval_path = plot_retrieval(test_set, query_pos, [int(test_y[p]) for p in picks], bank_set, bank_pos,
                                    sims.numpy(), _labels_by_position(bank_set, bank_kept, bank_y), names,
                                    out / "retrieval.png",
                                    f"{name}: test queries and their {idx.shape[1]} nearest training images "
                                    f"(cosine, pooled features); {agree:.0f}% share the query's label")
    return {"embedding_map": str(map_path), "retrieval": str(retrieval_path), "points": len(test_x),
            "bank": len(bank_x), "neighbour_label_agreement": agree, "time_s": round(time.perf_counter() - t_start, 2)}


def _labels_by_position(dataset, kept: Sequence[int], labels: torch.Tensor) -> np.ndarray:
    """Labels indexed by position in ``dataset`` (-1 where an image was skipped as unreadable)."""
    out = np.full(len(dataset), -1, dtype=np.int64)
    out[np.asarray(kept, dtype=np.int64)] = labels.numpy()
    return out
