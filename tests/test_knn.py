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


def test_a_bank_of_unit_rows_is_used_as_is_and_any_other_is_normalised():
    from simsiam.eval.knn import unit_rows

    bank = torch.nn.functional.normalize(torch.randn(50, 16), dim=1)
    assert unit_rows(bank).data_ptr() == bank.data_ptr()  # a 5 GB pixel bank is not copied
    raw = torch.randn(50, 16) * 3
    unit = unit_rows(raw)
    assert unit.data_ptr() != raw.data_ptr() and torch.allclose(unit.norm(dim=1), torch.ones(50), atol=1e-5)
    zero_row = torch.zeros(2, 16)  # no division by zero: the row stays zero
    assert torch.equal(unit_rows(zero_row), zero_row)


def test_features_are_written_into_one_tensor_in_dataset_order():
    from simsiam.data.memory import InMemoryImages
    from simsiam.eval import extract_features

    images = torch.randint(0, 256, (37, 1, 4, 4), dtype=torch.uint8)
    data = InMemoryImages(images, torch.arange(37) % 3, "t", 3, (0.5,), (0.25,))
    f, y, kept, _ = extract_features(lambda x: x.flatten(1), data, device=torch.device("cpu"), batch_size=8)
    expected = ((images.float() / 255 - 0.5) / 0.25).flatten(1)
    assert f.shape == (37, 16) and torch.allclose(f, expected) and kept == list(range(37))
    assert torch.equal(y, torch.arange(37) % 3)
