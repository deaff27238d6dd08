import torch

from simsiam.eval import knn_accuracy, knn_predict


def _clusters(n_per, classes, dim, seed, spread=0.05):
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(classes, dim, generator=g) * 3
    x = torch.cat([centres[c] + spread * torch.randn(n_per, dim, generator=g) for c in range(classes)])
    y = torch.arange(classes).repeat_interleave(n_per)
    return x, y


def test_knn_is_perfect_on_separable_clusters():
    bank, bank_y = _clusters(50, 5, 16, seed=0)
    q, qy = bank + 0.01 * torch.randn_like(bank), bank_y
    assert knn_accuracy(q, qy, bank, bank_y, 5, k=20, t=0.1) == 100.0


def test_knn_is_near_chance_on_shuffled_labels():
    bank, bank_y = _clusters(100, 10, 16, seed=1)
    shuffled = bank_y[torch.randperm(len(bank_y), generator=torch.Generator().manual_seed(0))]
    q, qy = _clusters(100, 10, 16, seed=1)
    acc = knn_accuracy(q, qy, bank, shuffled, 10, k=200, t=0.1)
    assert acc < 25.0  # chance is 10%


def test_knn_k_larger_than_bank_and_weighting():
    bank = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]])
    labels = torch.tensor([0, 0, 1])
    scores = knn_predict(torch.tensor([[0.0, 1.0]]), bank, labels, 2, k=200, t=0.1)
    assert scores.shape == (1, 2) and scores.argmax().item() == 1  # the single very close neighbour wins
