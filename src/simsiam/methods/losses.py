"""SimSiam's loss as pure functions (paper, section 1 / Algorithm 1).

The stop-gradient is applied here, where the loss is formed, by the ``stop_grad`` argument --
not inside a model's ``forward`` -- so that the Figure 2 ablation is one switch.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F


def negative_cosine(p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """D(p, z) = -<p/||p||, z/||z||>, averaged over the batch. Minimum -1."""
    return -(F.normalize(p, dim=1) * F.normalize(z, dim=1)).sum(dim=1).mean()


def cross_entropy_similarity(p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """Section 4.5: D(p, z) = -softmax(z) . log softmax(p), over channels, averaged over the batch."""
    return -(F.softmax(z, dim=1) * F.log_softmax(p, dim=1)).sum(dim=1).mean()


SIMILARITIES: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "cosine": negative_cosine,
    "cross_entropy": cross_entropy_similarity,
}


def target(z: torch.Tensor, stop_grad: bool = True) -> torch.Tensor:
    """stopgrad(z): the target side of D is a constant when ``stop_grad`` is on."""
    return z.detach() if stop_grad else z


def symmetric_loss(p1: torch.Tensor, p2: torch.Tensor, z1: torch.Tensor, z2: torch.Tensor, *,
                   stop_grad: bool = True, similarity: str = "cosine") -> torch.Tensor:
    """L = 1/2 D(p1, stopgrad(z2)) + 1/2 D(p2, stopgrad(z1))."""
    D = SIMILARITIES[similarity]
    return 0.5 * D(p1, target(z2, stop_grad)) + 0.5 * D(p2, target(z1, stop_grad))


def asymmetric_loss(p1: torch.Tensor, z2: torch.Tensor, *, stop_grad: bool = True,
                    similarity: str = "cosine") -> torch.Tensor:
    """Section 4.6: only D(p1, stopgrad(z2))."""
    return SIMILARITIES[similarity](p1, target(z2, stop_grad))
