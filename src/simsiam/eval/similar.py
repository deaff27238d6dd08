"""Nearest neighbours over a folder of images, and its near-duplicate groups (``simsiam similar``).

The folder is embedded as ``simsiam embed`` does (pooled backbone features; or its output is
read back), every vector is L2-normalised, and similarity is the cosine. The search is exact:
chunked matrix products in torch (memory bounded by the chunk sizes, any folder size); above
``FAISS_FROM`` images faiss's exact inner-product index is used instead when it is installed.

Outputs in the chosen directory: ``neighbours.csv`` (query, rank, neighbour, cosine),
``neighbours.png`` (one row per query: the query, then its k nearest images with their cosine),
with ``duplicates`` also ``duplicates.csv`` (group, path: images whose cosine to another of the
group is at least the threshold), and ``embedding/`` (the folder's embeddings, reusable with
``embeddings_dir``). A file name that is not UTF-8 is written as its bytes (``data/names.py``).
"""
from __future__ import annotations

import csv
import time
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw

from ..data import ImageFiles, UnreadableImage, decode_image
from ..data.names import open_text
from ..models import input_channels
from .embed import embed_folder, embed_images
from .normalisation import training_normalisation
from .pretrained import load_pretrained

FAISS_FROM = 1_000_000  # images; below it the torch search is fast enough and needs nothing more
GRID_ROWS = 32  # queries drawn in neighbours.png (the CSV has every query)
THUMB = 96  # pixels per image in the grid


def read_embeddings(embeddings_dir: str | Path) -> tuple[torch.Tensor, list[str]]:
    """``simsiam embed``'s output: the (N, D) array and the path of each row."""
    d = Path(embeddings_dir)
    if not (d / "embeddings.npy").is_file() or not (d / "index.csv").is_file():
        raise ValueError(f"{str(d)!r} holds no embeddings.npy and index.csv; write them with `simsiam embed RUN "
                         f"--data DIR --out {d}` or leave out --embeddings")
    feats = torch.from_numpy(np.load(d / "embeddings.npy", allow_pickle=False)).float()
    with open_text(d / "index.csv") as fh:
        paths = [row["path"] for row in csv.DictReader(fh)]
    if len(paths) != feats.shape[0]:
        raise ValueError(f"{d}: index.csv lists {len(paths)} images but embeddings.npy has {feats.shape[0]} rows")
    return feats, paths


def exact_search(queries: torch.Tensor, bank: torch.Tensor, k: int, exclude: Optional[Sequence[int]] = None,
                 query_chunk: int = 1024, bank_chunk: int = 65536) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` largest inner products of each query with the bank: ``(scores (Q, k), indices (Q, k))``.

    ``exclude[i]``: a bank row query i must not return (itself, when the queries are the bank);
    -1 for none. Chunked over both: a running top-k per query chunk, never a (Q, N) matrix.
    """
    k = min(k, bank.shape[0] - (1 if exclude is not None else 0))
    all_scores, all_index = [], []
    for q0 in range(0, queries.shape[0], query_chunk):
        q = queries[q0:q0 + query_chunk]
        best_s = torch.full((q.shape[0], 0), -float("inf"))
        best_i = torch.zeros((q.shape[0], 0), dtype=torch.long)
        for b0 in range(0, bank.shape[0], bank_chunk):
            sims = q @ bank[b0:b0 + bank_chunk].T  # (q, b)
            if exclude is not None:
                own = torch.as_tensor(exclude[q0:q0 + q.shape[0]]) - b0
                hit = (own >= 0) & (own < sims.shape[1])
                sims[hit.nonzero().squeeze(1), own[hit]] = -float("inf")
            s, i = torch.cat([best_s, sims], 1), torch.cat([best_i, torch.arange(b0, b0 + sims.shape[1]).expand_as(sims)], 1)
            top = s.topk(min(k, s.shape[1]), dim=1)
            best_s, best_i = top.values, i.gather(1, top.indices)
        all_scores.append(best_s)
        all_index.append(best_i)
    return torch.cat(all_scores), torch.cat(all_index)


def faiss_search(queries: torch.Tensor, bank: torch.Tensor, k: int, exclude: Optional[Sequence[int]] = None):
    """The same search with faiss's exact inner-product index (k + 1 found, the excluded row dropped)."""
    import faiss

    index = faiss.IndexFlatIP(bank.shape[1])
    index.add(bank.numpy().astype(np.float32))
    extra = 1 if exclude is not None else 0
    scores, idx = index.search(queries.numpy().astype(np.float32), k + extra)
    scores, idx = torch.from_numpy(scores), torch.from_numpy(idx).long()
    if exclude is not None:
        keep = idx != torch.as_tensor(exclude).unsqueeze(1)
        keep &= keep.cumsum(1) <= k  # a query that was not its own hit keeps its first k
        scores, idx = scores[keep].view(-1, k), idx[keep].view(-1, k)
    return scores, idx


def search(queries: torch.Tensor, bank: torch.Tensor, k: int, exclude=None) -> tuple[torch.Tensor, torch.Tensor, str]:
    """Exact cosine search (inputs L2-normalised); returns scores, indices and which engine ran."""
    if bank.shape[0] > FAISS_FROM:
        try:
            import faiss  # noqa: F401
            return (*faiss_search(queries, bank, k, exclude), "faiss (IndexFlatIP, exact)")
        except ImportError:
            pass
    return (*exact_search(queries, bank, k, exclude), "torch (exact, chunked)")


def duplicate_groups(feats: torch.Tensor, threshold: float, chunk: int = 1024) -> list[list[int]]:
    """Groups of rows joined by cosine >= ``threshold`` (connected components; ``feats`` normalised),
    largest first; images with no such partner are in no group."""
    parent = list(range(feats.shape[0]))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for q0 in range(0, feats.shape[0], chunk):
        sims = feats[q0:q0 + chunk] @ feats.T
        pairs = (sims >= threshold).nonzero()
        for a, b in pairs.tolist():
            a += q0
            if a < b:
                parent[root(a)] = root(b)
    groups: dict[int, list[int]] = {}
    for i in range(len(parent)):
        groups.setdefault(root(i), []).append(i)
    return sorted((g for g in groups.values() if len(g) > 1), key=lambda g: (-len(g), g[0]))


def _thumbnail(path: str) -> Image.Image:
    try:
        return decode_image(path, "RGB", THUMB).resize((THUMB, THUMB), Image.Resampling.BICUBIC)
    except UnreadableImage:
        return Image.new("RGB", (THUMB, THUMB), (200, 0, 0))


def neighbour_grid(query_paths: list[str], neighbours: list[list[tuple[str, float]]], out: Path) -> Path:
    """One row per query: the query (framed), then its neighbours, each captioned with its cosine."""
    cols = 1 + max((len(n) for n in neighbours), default=0)
    cell_h = THUMB + 14
    sheet = Image.new("RGB", (cols * (THUMB + 4), len(query_paths) * cell_h), "white")
    draw = ImageDraw.Draw(sheet)
    for r, (query, found) in enumerate(zip(query_paths, neighbours)):
        y = r * cell_h
        sheet.paste(_thumbnail(query), (0, y))
        draw.rectangle([0, y, THUMB - 1, y + THUMB - 1], outline=(0, 90, 200), width=2)
        draw.text((2, y + THUMB), "query", fill="black")
        for c, (path, score) in enumerate(found, start=1):
            sheet.paste(_thumbnail(path), (c * (THUMB + 4), y))
            draw.text((c * (THUMB + 4) + 2, y + THUMB), f"{score:.3f}", fill="black")
    sheet.save(out)
    return out


def find_similar(checkpoint: str | Path, data_dir: Optional[str | Path], out_dir: str | Path, *,
                 queries: Sequence[str] = (), k: int = 8, duplicates: Optional[float] = None,
                 embeddings_dir: Optional[str | Path] = None, image_size: int = 0, batch_size: int = 256,
                 device: str = "cpu", progress: bool = True) -> dict:
    """Embed the folder (or read ``embeddings_dir``), then the k nearest images of each query
    (``queries``; every image of the folder when empty) and, with ``duplicates``, near-duplicate groups."""
    t_start = time.perf_counter()
    if k < 1:
        raise ValueError(f"--k must be at least 1, got {k}")
    if duplicates is not None and not -1 <= duplicates <= 1:
        raise ValueError(f"--duplicates is a cosine threshold in [-1, 1] (e.g. 0.95), got {duplicates}")
    missing = [q for q in queries if not Path(q).is_file()]
    if missing:  # before the folder's embedding, which may take long
        raise ValueError(f"query image(s) not found: {', '.join(missing[:5])}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if embeddings_dir is None:
        if data_dir is None:
            raise ValueError("give the folder to search (--data DIR) or simsiam embed's output (--embeddings DIR)")
        embed_folder(checkpoint, data_dir, out / "embedding", image_size=image_size, batch_size=batch_size,
                     device=device, progress=progress)
        embeddings_dir = out / "embedding"
    bank, paths = read_embeddings(embeddings_dir)
    if bank.shape[0] < 2:
        raise ValueError(f"the folder has {bank.shape[0]} readable image(s); a search needs at least 2")
    bank = F.normalize(bank, dim=1)

    if queries:
        qfeats, qpaths = _embed_queries(checkpoint, queries, image_size, batch_size, device)
        exclude = None
    else:
        qfeats, qpaths, exclude = bank, paths, list(range(len(paths)))
    scores, index, engine = search(qfeats, bank, k, exclude)

    with open_text(out / "neighbours.csv", "w") as fh:
        writer = csv.writer(fh)
        writer.writerow(["query", "rank", "neighbour", "cosine"])
        for q, path in enumerate(qpaths):
            writer.writerows((path, r + 1, paths[j], f"{s:.6f}")
                             for r, (s, j) in enumerate(zip(scores[q].tolist(), index[q].tolist())))
    shown = min(len(qpaths), GRID_ROWS)
    neighbour_grid(qpaths[:shown], [[(paths[j], s) for s, j in zip(scores[q].tolist(), index[q].tolist())]
                                    for q in range(shown)], out / "neighbours.png")
    summary = {"images": len(paths), "queries": len(qpaths), "k": int(index.shape[1]), "engine": engine,
               "grid_rows": shown, "out_dir": str(out)}
    if duplicates is not None:
        groups = duplicate_groups(bank, duplicates)
        with open_text(out / "duplicates.csv", "w") as fh:
            writer = csv.writer(fh)
            writer.writerow(["group", "path"])
            for g, members in enumerate(groups, start=1):
                writer.writerows((g, paths[i]) for i in members)
        summary.update(duplicate_groups=len(groups), duplicate_images=sum(map(len, groups)))
    summary["time_s"] = round(time.perf_counter() - t_start, 2)
    return summary


def _embed_queries(checkpoint, queries: Sequence[str], image_size: int, batch_size: int, device: str):
    model, cfg = load_pretrained(checkpoint, device)
    channels = input_channels(model.backbone)
    mean, std = training_normalisation(cfg, channels)
    images = ImageFiles(list(queries), [-1] * len(queries), "queries", 0, channels=channels, mean=mean, std=std)
    feats, kept, unreadable, _ = embed_images(model, cfg, images, image_size=image_size, batch_size=batch_size,
                                              device=device, progress=False)
    if unreadable:
        raise ValueError(f"query image(s) cannot be read: {', '.join(unreadable[:5])}")
    return F.normalize(feats, dim=1), [images.paths[i] for i in kept]
