"""Tests of simsiam.data: every loader on small fixtures in the real file formats."""

from __future__ import annotations

import gzip
import os
import pickle
import struct

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader
from torchvision import transforms

from simsiam.data import (
    DATASETS,
    DatasetNotFound,
    ImageFiles,
    InMemoryImages,
    TwoViewDataset,
    UnreadableImage,
    collate_views,
    load_dataset,
    read_idx,
    sources,
)

try:  # tests/ on sys.path (no tests/__init__.py) or the repository root (with one)
    import fixtures_data as fx
except ImportError:  # pragma: no cover
    from tests import fixtures_data as fx

DEBIAN_FMNIST = "/usr/share/datasets/fashion-mnist"


@pytest.fixture(autouse=True)
def _isolated_search(monkeypatch, tmp_path):
    """Keep the environment and the Debian Fashion-MNIST install out of fixture-based tests."""
    for var in ("SIMSIAM_FMNIST_DIR", "SIMSIAM_CIFAR10_DIR", "SIMSIAM_CIFAR100_DIR", "SIMSIAM_STL10_DIR"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(sources, "FMNIST_SYSTEM_DIR", str(tmp_path / "no-system-fmnist"))


def test_registry_names():
    assert set(DATASETS) == {"fmnist", "cifar10", "cifar100", "stl10", "imagefolder", "folder", "digits", "tinyimagenet", "shards"}


def test_unknown_dataset_and_split():
    with pytest.raises(ValueError, match="cifar10"):
        load_dataset("mnist", "train")
    with pytest.raises(ValueError, match=r"'valid'.*train, test"):
        load_dataset("fmnist", "valid")
    with pytest.raises(ValueError, match="train, test, unlabeled, train\\+unlabeled"):
        load_dataset("stl10", "extra")


# ---------------------------------------------------------------------------- IDX


@pytest.mark.parametrize("gz", [True, False])
@pytest.mark.parametrize("dtype", [np.uint8, np.int8, ">i2", ">i4", ">f4", ">f8"])
def test_read_idx_roundtrip(tmp_path, gz, dtype):
    array = (np.arange(24).reshape(2, 3, 4) - 5).astype(dtype)
    path = fx.write_idx(tmp_path / "a.idx", array, gz=gz)
    out = read_idx(path)
    assert out.shape == (2, 3, 4) and out.dtype.isnative and out.flags.writeable
    np.testing.assert_array_equal(out, array)


def _header(code: int, *dims: int) -> bytes:
    return struct.pack(">HBB", 0, code, len(dims)) + struct.pack(f">{len(dims)}I", *dims)


@pytest.mark.parametrize(
    "payload, message",
    [
        (b"\x00", "too short for a header"),
        (b"\x12\x34\x08\x01" + b"\x00" * 8, "not an IDX file"),
        (_header(0x07, 2), "unknown dtype code 0x07"),
        (_header(0x08), "0 dimensions"),
        (struct.pack(">HBB", 0, 0x08, 3) + b"\x00\x00\x00\x02", "truncated inside its header"),
        (_header(0x08, 10, 28, 28) + b"\x00" * 100, "truncated"),
        (_header(0x08, 2) + b"\x00" * 3, "longer than its header"),
    ],
)
def test_read_idx_rejects_malformed(tmp_path, payload, message):
    path = tmp_path / "bad-idx3-ubyte"
    path.write_bytes(payload)
    with pytest.raises(ValueError, match=message) as info:
        read_idx(path)
    assert str(path) in str(info.value)


def test_read_idx_rejects_damaged_gzip(tmp_path):
    data = gzip.compress(fx.idx_bytes(np.zeros((50, 28, 28), np.uint8)))
    path = tmp_path / "x.gz"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="damaged gzip"):
        read_idx(path)


# ---------------------------------------------------------------------------- Fashion-MNIST


def _check_common(ds, name, channels, num_classes, image_size, n):
    assert ds.name == name and ds.channels == channels and ds.num_classes == num_classes
    assert ds.image_size == image_size and len(ds) == n
    assert len(ds.mean) == channels and len(ds.std) == channels


@pytest.mark.parametrize("gz", [True, False])
def test_fmnist_from_data_dir(tmp_path, gz):
    truth = fx.make_fmnist(tmp_path / "fm", gz=gz)
    for split, (images, labels) in truth.items():
        ds = load_dataset("fmnist", split, str(tmp_path / "fm"))
        _check_common(ds, "fmnist", 1, 10, 28, len(images))
        assert ds.images.dtype == torch.uint8 and ds.images.shape == (len(images), 1, 28, 28)
        assert ds.images.is_contiguous() and ds.labels.dtype == torch.int64
        np.testing.assert_array_equal(ds.images[:, 0].numpy(), images)
        np.testing.assert_array_equal(ds.labels.numpy(), labels)
        img, label = ds[3]
        assert img.mode == "L" and img.size == (28, 28) and label == labels[3]
        np.testing.assert_array_equal(np.asarray(img), images[3])


def test_fmnist_torchvision_layout_and_env_var(tmp_path, monkeypatch):
    fx.make_fmnist(tmp_path / "root" / "FashionMNIST" / "raw")
    assert len(load_dataset("fmnist", "test", str(tmp_path / "root"))) == 6
    fx.make_fmnist(tmp_path / "env" / "fashion-mnist", n_test=4)
    monkeypatch.setenv("SIMSIAM_FMNIST_DIR", str(tmp_path / "env"))
    assert len(load_dataset("fmnist", "test")) == 4


def test_fmnist_missing_lists_every_place(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "train-images-idx3-ubyte.gz").write_bytes(b"")  # present, but its labels file is not
    with pytest.raises(DatasetNotFound) as info:
        load_dataset("fmnist", "train", str(empty))
    msg = str(info.value)
    for place in (empty, empty / "fashion-mnist", empty / "FashionMNIST" / "raw"):
        assert str(place) in msg
    # A directory the user named is never replaced by the system's copy (issue 16): not even searched.
    assert sources.FMNIST_SYSTEM_DIR not in info.value.searched
    assert "'fmnist'" in msg and "apt-get install dataset-fashion-mnist" in msg
    assert "missing train-labels-idx1-ubyte.gz" in msg
    assert info.value.dataset == "fmnist" and str(empty) in info.value.searched
    assert isinstance(info.value, FileNotFoundError)


def test_dataset_not_found_pickles():
    err = DatasetNotFound("msg", "cifar10", ["/a", "/b"])
    back = pickle.loads(pickle.dumps(err))
    assert str(back) == "msg" and back.dataset == "cifar10" and back.searched == ["/a", "/b"]


@pytest.mark.skipif(not os.path.isdir(DEBIAN_FMNIST), reason="Debian dataset-fashion-mnist not installed")
def test_fmnist_real_files(monkeypatch):
    monkeypatch.setattr(sources, "FMNIST_SYSTEM_DIR", DEBIAN_FMNIST)
    train = load_dataset("fmnist", "train")
    assert train.images.shape == (60000, 1, 28, 28) and train.images.dtype == torch.uint8
    assert train.labels.shape == (60000,) and set(train.labels.unique().tolist()) == set(range(10))
    assert len(load_dataset("fmnist", "test")) == 10000


# ---------------------------------------------------------------------------- CIFAR


def test_cifar10(tmp_path):
    truth = fx.make_cifar10(tmp_path)
    for data_dir in (tmp_path, tmp_path / "cifar-10-batches-py"):
        train = load_dataset("cifar10", "train", str(data_dir))
        _check_common(train, "cifar10", 3, 10, 32, 15)
        np.testing.assert_array_equal(train.images.numpy(), truth["train"][0])
        np.testing.assert_array_equal(train.labels.numpy(), truth["train"][1])
    test = load_dataset("cifar10", "test", str(tmp_path))
    assert test.images.shape == (3, 3, 32, 32) and test.mean == (0.4914, 0.4822, 0.4465)
    img, label = test[1]
    # A row holds the red plane first: pixel (y, x) of channel c is row[c*1024 + y*32 + x].
    assert img.mode == "RGB" and img.getpixel((5, 2)) == tuple(int(v) for v in truth["test"][0][1, :, 2, 5])
    assert label == truth["test"][1][1]


def test_cifar100(tmp_path):
    truth = fx.make_cifar100(tmp_path)
    ds = load_dataset("cifar100", "test", str(tmp_path))
    _check_common(ds, "cifar100", 3, 100, 32, 5)
    np.testing.assert_array_equal(ds.labels.numpy(), truth["test"][1])
    np.testing.assert_array_equal(ds.images.numpy(), truth["test"][0])


class _Evil:
    def __reduce__(self):
        return (os.getcwd, ())


def test_cifar_refuses_code_in_pickles(tmp_path):
    fx.make_cifar10(tmp_path)
    with open(tmp_path / "cifar-10-batches-py" / "test_batch", "wb") as fh:
        pickle.dump({b"data": _Evil(), b"labels": []}, fh, protocol=2)
    with pytest.raises(ValueError, match="refusing to load posix.getcwd"):
        load_dataset("cifar10", "test", str(tmp_path))


def test_cifar_missing_batch(tmp_path):
    fx.make_cifar10(tmp_path)
    os.remove(tmp_path / "cifar-10-batches-py" / "data_batch_3")
    with pytest.raises(DatasetNotFound, match="missing data_batch_3") as info:
        load_dataset("cifar10", "train", str(tmp_path))
    assert "cifar-10-python.tar.gz" in str(info.value)
    with pytest.raises(DatasetNotFound, match="data.data_dir is not set"):
        load_dataset("cifar100", "train")


# ---------------------------------------------------------------------------- STL-10


def test_stl10_transpose_is_right(tmp_path):
    directory = tmp_path / "stl10_binary"
    directory.mkdir()
    image = np.zeros((1, 3, 96, 96), np.uint8)
    image[0, 0, 10, 70] = 255  # red dot: row 10, column 70 (asymmetric, so a wrong transpose shows)
    image[0, 2, 90:, :] = 200  # blue band along the bottom
    (directory / "test_X.bin").write_bytes(fx.stl_bytes(image))
    (directory / "test_y.bin").write_bytes(bytes([10]))
    ds = load_dataset("stl10", "test", str(tmp_path))
    np.testing.assert_array_equal(ds.images.numpy(), image)
    img, label = ds[0]
    assert label == 9 and img.getpixel((70, 10)) == (255, 0, 0) and img.getpixel((3, 93)) == (0, 0, 200)


def test_stl10_splits(tmp_path):
    truth = fx.make_stl10(tmp_path)
    train = load_dataset("stl10", "train", str(tmp_path / "stl10_binary"))
    _check_common(train, "stl10", 3, 10, 96, 3)
    np.testing.assert_array_equal(train.labels.numpy(), truth["train"][1])
    unlabeled = load_dataset("stl10", "unlabeled", str(tmp_path))
    assert len(unlabeled) == 4 and (unlabeled.labels == -1).all()
    both = load_dataset("stl10", "train+unlabeled", str(tmp_path))
    np.testing.assert_array_equal(both.images.numpy(), np.concatenate([truth["train"][0], truth["unlabeled"][0]]))
    assert both.labels.tolist() == truth["train"][1].tolist() + [-1] * 4
    assert both.images.is_contiguous()


def test_stl10_bad_size(tmp_path):
    fx.make_stl10(tmp_path)
    with open(tmp_path / "stl10_binary" / "test_X.bin", "ab") as fh:
        fh.write(b"\x00" * 7)
    with pytest.raises(ValueError, match="not a positive multiple of 27648"):
        load_dataset("stl10", "test", str(tmp_path))


# ---------------------------------------------------------------------------- digits


def test_digits_split():
    train, test = load_dataset("digits", "train"), load_dataset("digits", "test")
    _check_common(train, "digits", 1, 10, 8, 1497)
    assert len(test) == 300 and test.mean == train.mean and 0 < train.std[0] < 1
    assert train.images.dtype == torch.uint8 and int(train.images.max()) == 255
    from sklearn.datasets import load_digits

    everything = np.rint(load_digits().images * 255 / 16).astype(np.uint8)
    # The two splits together are exactly the full set, so they partition it (are disjoint).
    both = torch.cat([train.images, test.images])[:, 0].numpy()
    assert sorted(x.tobytes() for x in both) == sorted(x.tobytes() for x in everything)
    assert torch.equal(load_dataset("digits", "test").images, test.images)  # deterministic


# ---------------------------------------------------------------------------- image folders


def test_imagefolder(tmp_path):
    truth = fx.make_imagefolder(tmp_path)
    train = load_dataset("imagefolder", "train", str(tmp_path))
    _check_common(train, "imagefolder", 3, 3, 0, 5)
    assert train.classes == ["cat", "dog", "eel"]  # union of splits, sorted: test's 'eel' keeps index 2
    got = sorted((os.path.relpath(p, tmp_path), train.classes[y]) for p, y in zip(train.paths, train.labels))
    assert got == sorted(truth["train"])
    img, label = train[0]
    assert img.mode == "RGB" and img.size == (20, 16) and isinstance(train.labels, list)
    test = load_dataset("imagefolder", "test", str(tmp_path))
    assert test.labels == [0, 1, 2] and test.mean == (0.485, 0.456, 0.406)


def test_imagefolder_val_fallback_and_missing(tmp_path):
    fx.save_image(tmp_path / "train" / "a" / "x.png")
    with pytest.raises(DatasetNotFound) as info:
        load_dataset("imagefolder", "test", str(tmp_path))
    assert str(tmp_path / "test") in str(info.value) and str(tmp_path / "val") in str(info.value)
    fx.save_image(tmp_path / "val" / "b" / "y.png")
    assert load_dataset("imagefolder", "test", str(tmp_path)).labels == [1]
    with pytest.raises(DatasetNotFound, match="does not exist"):
        load_dataset("imagefolder", "train", str(tmp_path / "nope"))


def test_folder_is_recursive_and_unlabelled(tmp_path):
    fx.save_image(tmp_path / "a.png")
    fx.save_image(tmp_path / "deep" / "er" / "b.jpg")
    fx.save_image(tmp_path / "gray.PNG", mode="L")
    fx.save_image(tmp_path / ".hidden" / "c.png")
    (tmp_path / "readme.md").write_text("hi")
    ds = load_dataset("folder", "train", str(tmp_path))
    _check_common(ds, "folder", 3, 0, 0, 3)
    expected = ["a.png", "gray.PNG", os.path.join("deep", "er", "b.jpg")]  # sorted walk: files, then subdirs
    assert [os.path.relpath(p, tmp_path) for p in ds.paths] == expected
    assert ds.labels == [-1, -1, -1] and ds[1][0].mode == "RGB"
    with pytest.raises(ValueError, match='data.eval_split=""'):
        load_dataset("folder", "test", str(tmp_path))


def test_folder_missing_or_empty(tmp_path):
    with pytest.raises(DatasetNotFound, match="'folder'"):
        load_dataset("folder", "train", None)
    with pytest.raises(DatasetNotFound, match="contains no images") as info:
        load_dataset("folder", "train", str(tmp_path))
    assert str(tmp_path) in str(info.value)


def test_unreadable_images(tmp_path):
    bad_jpeg = fx.write_truncated_jpeg(tmp_path / "cut.jpg")
    fake_png = fx.write_fake_png(tmp_path / "text.png")
    ds = ImageFiles([str(bad_jpeg), str(fake_png)], [-1, -1], "folder", 0)
    for i, path in enumerate((bad_jpeg, fake_png)):
        with pytest.raises(UnreadableImage) as info:
            ds[i]
        assert info.value.path == str(path) and str(path) in str(info.value)


def test_imagefiles_grayscale_mode(tmp_path):
    path = fx.save_image(tmp_path / "c.png")
    ds = ImageFiles([str(path)], [0], "gray", 1, channels=1, mean=(0.5,), std=(0.5,))
    assert ds[0][0].mode == "L" and ds.image_size == 0


# ---------------------------------------------------------------------------- in-memory dataset


def test_in_memory_images_validation_and_rgb():
    images = torch.arange(2 * 3 * 4 * 4, dtype=torch.uint8).reshape(2, 3, 4, 4)
    ds = InMemoryImages(images, [1, -1], "toy", 2, (0.5,) * 3, (0.2,) * 3)
    img, label = ds[1]
    assert img.mode == "RGB" and label == -1 and img.getpixel((2, 1)) == tuple(images[1, :, 1, 2].tolist())
    assert ds.labels.dtype == torch.int64
    with pytest.raises(ValueError, match="uint8"):
        InMemoryImages(images.float(), [0, 0], "toy", 2, (0.5,) * 3, (0.2,) * 3)
    with pytest.raises(ValueError, match="labels"):
        InMemoryImages(images, [0], "toy", 2, (0.5,) * 3, (0.2,) * 3)
    with pytest.raises(ValueError, match="mean/std"):
        InMemoryImages(images, [0, 0], "toy", 2, (0.5,), (0.2,))


# ---------------------------------------------------------------------------- two views


_RANDOM = transforms.Compose([transforms.RandomResizedCrop(12, scale=(0.1, 0.5)), transforms.ToTensor()])
_FIXED = transforms.Compose([transforms.Resize((12, 12)), transforms.ToTensor()])


def _folder_with_corrupt_file(root):
    for i in range(5):
        fx.save_image(root / f"img{i}.png", seed=i)
    return fx.write_truncated_jpeg(root / "img2_bad.jpg")


@pytest.mark.parametrize("workers", [0, 2])
def test_two_view_loader_skips_corrupt(tmp_path, workers):
    bad = _folder_with_corrupt_file(tmp_path)
    ds = TwoViewDataset(load_dataset("folder", "train", str(tmp_path)), _RANDOM)
    loader = DataLoader(ds, batch_size=4, num_workers=workers, collate_fn=collate_views)
    batches = list(loader)
    assert sum(len(b["skipped"]) for b in batches) == 1
    assert [p for b in batches for p in b["skipped"]] == [str(bad)]
    v1, v2 = batches[0]["views"]
    assert v1.shape == v2.shape == (3, 3, 12, 12) and batches[0]["labels"].tolist() == [-1, -1, -1]
    assert batches[1]["views"][0].shape == (2, 3, 12, 12)


def test_collate_all_skipped():
    out = collate_views(["/a.png", "/b.png"])
    assert out["views"] is None and out["labels"].shape == (0,) and out["labels"].dtype == torch.int64
    assert out["skipped"] == ["/a.png", "/b.png"]


def test_two_views_are_independent_draws():
    images = torch.randint(0, 256, (2, 1, 28, 28), dtype=torch.uint8)
    base = InMemoryImages(images, [3, 4], "toy", 5, (0.5,), (0.5,))
    torch.manual_seed(0)
    v1, v2, label = TwoViewDataset(base, _RANDOM)[0]
    assert label == 3 and v1.shape == v2.shape == (1, 12, 12) and not torch.equal(v1, v2)
    f1, f2, _ = TwoViewDataset(base, _FIXED)[1]
    assert torch.equal(f1, f2)  # same image underneath
