"""Weighted kNN classification of l2-normalised features (Wu et al. 2018), the paper's monitor.

Pure functions: feature extraction is separate (``features.py``), so the same classifier serves
the training monitor, ``simsiam knn`` and the tests.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F


@torch.no_grad()
def knn_predict(queries: torch.Tensor, bank: torch.Tensor, bank_labels: torch.Tensor, num_classes: int,
                k: int = 200, t: float = 0.1, chunk: int = 1024) -> torch.Tensor:
    """Class scores ``(Q, num_classes)`` for each query: neighbours' votes weighted by exp(sim / t).

    ``queries`` (Q, F) and ``bank`` (N, F) are l2-normalised here, so similarity is cosine.
    ``k`` is clipped to the bank size, so no sample is dropped or invented.
    """
    bank = F.normalize(bank.float(), dim=1)
    k = min(k, bank.shape[0])
    scores = []
    for start in range(0, queries.shape[0], chunk):
        q = F.normalize(queries[start:start + chunk].float(), dim=1)
        sim = q @ bank.T  # (q, N)
        top_sim, top_idx = sim.topk(k, dim=1)  # (q, k)
        weights = (top_sim / t).exp()
        votes = torch.zeros(q.shape[0], num_classes, device=q.device)
        votes.scatter_add_(1, bank_labels[top_idx], weights)
        scores.append(votes)
    return torch.cat(scores)


def knn_accuracy(queries: torch.Tensor, query_labels: torch.Tensor, bank: torch.Tensor, bank_labels: torch.Tensor,
                 num_classes: int, k: int = 200, t: float = 0.1) -> float:
    """Top-1 accuracy in percent."""
    pred = knn_predict(queries, bank, bank_labels.to(bank.device), num_classes, k, t).argmax(dim=1)
    return 100.0 * (pred.cpu() == query_labels.cpu()).float().mean().item()


def knn_sweep(queries: torch.Tensor, query_labels: torch.Tensor, bank: torch.Tensor, bank_labels: torch.Tensor,
              num_classes: int, ks: Sequence[int] = (200,), ts: Sequence[float] = (0.1,)) -> dict[str, float]:
    """Accuracy for every (k, t) pair, keyed ``"k=200,t=0.1"``; one similarity pass per k would be
    cheaper, but the bank sizes here make the simple form fast enough."""
    return {f"k={k},t={t}": knn_accuracy(queries, query_labels, bank, bank_labels, num_classes, k, t)
            for k in ks for t in ts}
