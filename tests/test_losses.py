import numpy as np
import pytest
import torch

from simsiam.methods.losses import (
    asymmetric_loss,
    cross_entropy_similarity,
    negative_cosine,
    symmetric_loss,
)


def _naive_D(p, z):
    """D(p, z) written from the formula, one sample at a time."""
    vals = []
    for pi, zi in zip(p, z):
        vals.append(-np.dot(pi / np.linalg.norm(pi), zi / np.linalg.norm(zi)))
    return float(np.mean(vals))


def test_negative_cosine_matches_numpy_reference():
    g = torch.Generator().manual_seed(0)
    p, z = torch.randn(16, 32, generator=g), torch.randn(16, 32, generator=g)
    assert negative_cosine(p, z).item() == pytest.approx(_naive_D(p.numpy(), z.numpy()), abs=1e-6)


def test_symmetric_loss_matches_reference():
    g = torch.Generator().manual_seed(1)
    p1, p2, z1, z2 = (torch.randn(8, 10, generator=g) for _ in range(4))
    ref = 0.5 * _naive_D(p1.numpy(), z2.numpy()) + 0.5 * _naive_D(p2.numpy(), z1.numpy())
    assert symmetric_loss(p1, p2, z1, z2).item() == pytest.approx(ref, abs=1e-6)


def test_symmetric_loss_is_minus_one_only_for_identical_directions():
    z = torch.randn(4, 6)
    assert symmetric_loss(2 * z, 3 * z, z, z).item() == pytest.approx(-1.0, abs=1e-6)
    other = z + 0.5 * torch.randn(4, 6)
    assert symmetric_loss(other, z, other, z).item() > -1.0 + 1e-3


def test_stop_gradient_blocks_the_target_branch():
    z2 = torch.randn(4, 6, requires_grad=True)
    p1 = torch.randn(4, 6, requires_grad=True)
    asymmetric_loss(p1, z2, stop_grad=True).backward()
    assert z2.grad is None and p1.grad is not None
    asymmetric_loss(p1, z2, stop_grad=False).backward()
    assert z2.grad is not None and z2.grad.abs().sum() > 0


def test_cross_entropy_similarity_matches_numpy_reference():
    g = torch.Generator().manual_seed(2)
    p, z = torch.randn(5, 7, generator=g), torch.randn(5, 7, generator=g)
    pn, zn = p.numpy().astype(np.float64), z.numpy().astype(np.float64)
    sz = np.exp(zn) / np.exp(zn).sum(1, keepdims=True)
    log_sp = pn - np.log(np.exp(pn).sum(1, keepdims=True))
    ref = float(np.mean(-(sz * log_sp).sum(1)))
    assert cross_entropy_similarity(p, z).item() == pytest.approx(ref, abs=1e-5)
