"""data.train_limit / data.eval_limit: seeded, class-stratified random subsets (data/subset.py)."""
from __future__ import annotations

import torch

from simsiam.data import ImageFiles, InMemoryImages
from simsiam.data.subset import describe, subset, subset_indices


def _sorted_by_class(n_per_class=(50, 30, 20)) -> InMemoryImages:
    labels = torch.cat([torch.full((n,), c) for c, n in enumerate(n_per_class)])
    images = torch.arange(len(labels), dtype=torch.int64).remainder(256).to(torch.uint8).view(-1, 1, 1, 1).expand(-1, 1, 2, 2)
    return InMemoryImages(images.clone(), labels, "toy", len(n_per_class), (0.5,), (0.25,))


def test_a_limit_keeps_every_class_at_its_share_not_the_first_classes():
    data = _sorted_by_class((50, 30, 20))
    small = subset(data, 10)
    counts = torch.bincount(small.labels, minlength=3).tolist()
    assert counts == [5, 3, 2]  # the first 10 of the sorted list would be class 0 only
    assert small.images.shape == (10, 1, 2, 2) and len(small) == 10


def test_the_shares_round_by_largest_remainder_and_sum_to_the_limit():
    labels = [0] * 7 + [1] * 7 + [2] * 6
    for limit in (1, 2, 3, 5, 11, 19):
        index = subset_indices(labels, limit)
        assert len(index) == limit and len(set(index.tolist())) == limit
        counts = torch.bincount(torch.tensor(labels)[index], minlength=3).double()
        exact = torch.tensor([7.0, 7.0, 6.0]) * limit / 20
        assert ((counts - exact).abs() < 1).all(), (limit, counts, exact)


def test_the_subset_is_random_within_classes_seeded_and_the_same_every_time():
    data = _sorted_by_class((100, 100))
    a, b = subset_indices(data.labels, 20), subset_indices(data.labels, 20)
    assert torch.equal(a, b)
    assert not torch.equal(a, subset_indices(data.labels, 20, seed=1))
    assert a[:10].tolist() != list(range(10))  # not the first of each class


def test_unlabelled_data_get_a_seeded_random_subset():
    labels = [-1] * 40
    index = subset_indices(labels, 8)
    assert len(index) == 8 and index.tolist() != list(range(8)) and torch.equal(index, subset_indices(labels, 8))


def test_a_file_dataset_is_cut_the_same_way_and_says_what_it_is(tmp_path):
    paths = [str(tmp_path / f"{i}.png") for i in range(30)]
    files = ImageFiles(paths, [i // 10 for i in range(30)], "files", 3)
    small = subset(files, 6)
    assert sorted(small.labels) == [0, 0, 1, 1, 2, 2] and all(p in paths for p in small.paths)
    assert describe(small) == "6 images (a class-stratified random subset of 30, seed 0)"
    assert describe(files) == "30 images" and subset(files, 0) is files and subset(files, 30) is files
