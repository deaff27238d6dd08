"""kNN accuracy under torchrun: every rank holds the whole bank, each classifies a share of the queries.

The similarity of every query to the whole bank is the costly part; done on every rank it would
cost the same wall time as one process at one thread each. Each rank takes every world_size-th
query, counts its correct predictions, and the counts are summed, so the figure is the one a single
process computes on the same features. In one process this is :func:`knn_sweep` itself.
"""
from __future__ import annotations

from typing import Sequence

import torch

from ..parallel import distributed as dist
from .knn import knn_sweep


def sharded_knn_sweep(queries: torch.Tensor, query_labels: torch.Tensor, bank: torch.Tensor,
                      bank_labels: torch.Tensor, num_classes: int, ks: Sequence[int] = (200,),
                      ts: Sequence[float] = (0.1,)) -> dict[str, float]:
    """:func:`knn_sweep` with the queries split over ranks; every rank returns the global accuracies."""
    world = dist.world_size()
    if world == 1:
        return knn_sweep(queries, query_labels, bank, bank_labels, num_classes, ks, ts)
    mine = slice(dist.rank(), None, world)
    n_mine = len(query_labels[mine])
    accs = knn_sweep(queries[mine], query_labels[mine], bank, bank_labels, num_classes, ks, ts) if n_mine else {}
    keys = [f"k={k},t={t}" for k in ks for t in ts]
    # Percent back to counts (exact: the accuracy is 100 * correct / n), summed over ranks.
    correct = torch.tensor([round(accs.get(key, 0.0) * n_mine / 100) for key in keys], dtype=torch.float64)
    correct = dist.all_reduce_sum(correct.to(dist.collective_device())).cpu()
    total = max(1, len(query_labels))
    return {key: 100.0 * c / total for key, c in zip(keys, correct.tolist())}

