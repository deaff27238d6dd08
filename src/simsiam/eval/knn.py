"""Weighted kNN classification of l2-normalised features (Wu et al. 2018), the paper's monitor.

Pure functions: feature extraction is separate (``features.py``), so the same classifier serves
the training monitor, ``simsiam knn`` and the tests.

The costly part is the similarity of every query to the whole bank and its top-k. A sweep over
several k and temperatures does it once per query chunk, for the largest k: ``topk`` returns
neighbours sorted by similarity, so the first k columns of the top-max(k) are the top-k.
"""
from __future__ import annotations

from typing import Iterator, Sequence

import torch
import torch.nn.functional as F


def _top_neighbours(queries: torch.Tensor, bank: torch.Tensor, k: int, chunk: int
                    ) -> Iterator[tuple[slice, torch.Tensor, torch.Tensor]]:
    """For each chunk of queries: ``(rows, top_sim (q, k), top_idx (q, k))``, most similar first.

    ``bank`` must already be l2-normalised (done once by the caller, not once per chunk).
    """
    for start in range(0, queries.shape[0], chunk):
        rows = slice(start, start + chunk)
        q = F.normalize(queries[rows].float().to(bank.device), dim=1)
        sim = q @ bank.T  # (q, N) cosine similarities
        top_sim, top_idx = sim.topk(k, dim=1, largest=True, sorted=True)  # (q, k)
        yield rows, top_sim, top_idx


def unit_rows(x: torch.Tensor) -> torch.Tensor:
    """``x`` with l2-normalised rows, in float32: ``x`` itself when its rows are unit already (a pixel
    bank normalised in place by its caller), so that a 5 GB bank is not copied."""
    x = x.float()
    norms = x.norm(dim=1)
    if torch.allclose(norms, torch.ones_like(norms), atol=1e-4):
        return x
    return F.normalize(x, dim=1)


def _vote(top_sim: torch.Tensor, top_labels: torch.Tensor, num_classes: int, t: float) -> torch.Tensor:
    """Class scores ``(q, num_classes)``: each neighbour votes for its label with weight exp(sim / t)."""
    weights = (top_sim / t).exp()
    votes = torch.zeros(top_sim.shape[0], num_classes, device=top_sim.device)
    return votes.scatter_add_(1, top_labels, weights)


@torch.no_grad()
def knn_predict(queries: torch.Tensor, bank: torch.Tensor, bank_labels: torch.Tensor, num_classes: int,
                k: int = 200, t: float = 0.1, chunk: int = 1024) -> torch.Tensor:
    """Class scores ``(Q, num_classes)`` for each query: neighbours' votes weighted by exp(sim / t).

    ``queries`` (Q, F) and ``bank`` (N, F) are l2-normalised here, so similarity is cosine.
    ``k`` is clipped to the bank size, so no sample is dropped or invented.
    """
    bank = unit_rows(bank)
    bank_labels = bank_labels.to(bank.device)
    k = min(k, bank.shape[0])
    scores = [_vote(top_sim, bank_labels[top_idx], num_classes, t)
              for _, top_sim, top_idx in _top_neighbours(queries, bank, k, chunk)]
    return torch.cat(scores) if scores else torch.zeros(0, num_classes, device=bank.device)


def knn_accuracy(queries: torch.Tensor, query_labels: torch.Tensor, bank: torch.Tensor, bank_labels: torch.Tensor,
                 num_classes: int, k: int = 200, t: float = 0.1) -> float:
    """Top-1 accuracy in percent."""
    return knn_sweep(queries, query_labels, bank, bank_labels, num_classes, (k,), (t,))[f"k={k},t={t}"]


@torch.no_grad()
def knn_sweep(queries: torch.Tensor, query_labels: torch.Tensor, bank: torch.Tensor, bank_labels: torch.Tensor,
              num_classes: int, ks: Sequence[int] = (200,), ts: Sequence[float] = (0.1,),
              chunk: int = 1024) -> dict[str, float]:
    """Top-1 accuracy (percent) for every (k, t) pair, keyed ``"k=200,t=0.1"``, in one pass.

    The similarities and the top-max(k) neighbours of each query chunk are computed once and
    reused for every k (the first k columns) and every temperature, so a sweep costs about as
    much as its largest k alone.
    """
    if not ks or not ts:
        raise ValueError("knn_sweep needs at least one k and one temperature")
    if any(k < 1 for k in ks) or any(t <= 0 for t in ts):
        raise ValueError(f"k must be >= 1 and t > 0, got ks={list(ks)}, ts={list(ts)}")
    bank = unit_rows(bank)
    bank_labels = bank_labels.to(bank.device)
    query_labels = query_labels.to(bank.device)
    max_k = min(max(ks), bank.shape[0])
    correct = {(k, t): 0 for k in ks for t in ts}
    for rows, top_sim, top_idx in _top_neighbours(queries, bank, max_k, chunk):
        top_labels = bank_labels[top_idx]  # (q, max_k)
        truth = query_labels[rows]
        for k in ks:
            kk = min(k, max_k)  # clipped to the bank size, as knn_predict does
            for t in ts:
                pred = _vote(top_sim[:, :kk], top_labels[:, :kk], num_classes, t).argmax(dim=1)
                correct[(k, t)] += int((pred == truth).sum())
    n = max(1, queries.shape[0])
    return {f"k={k},t={t}": 100.0 * correct[(k, t)] / n for k in ks for t in ts}
