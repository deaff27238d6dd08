"""WebDataset shards: `simsiam pack` writes them, `data.dataset=shards` streams them -- every image
exactly once per epoch across ranks x workers, reshuffled each epoch, resumable mid-epoch, and bad
members skipped with a line naming them. On the batched pipeline (the default) the workers only read
the tars, the main process decodes each batch as the encoded pipeline does, and the views are the
batched augmentation of the decoded slots, as from the cache."""
from __future__ import annotations

import io
import json
import multiprocessing
import random
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fixtures_data import write_truncated_jpeg
from fixtures_gloo import WORLD, join, spawn
from simsiam.cli import main
from simsiam.parallel import distributed as dist

pytest.importorskip("webdataset")

from simsiam import get_preset  # noqa: E402
from simsiam.data import load_dataset  # noqa: E402
from simsiam.augment import BatchAugment  # noqa: E402
from simsiam.data.cache import cached  # noqa: E402
from simsiam.data.encoded_decode import decode_batch, into_slots  # noqa: E402
from simsiam.data.files import ImageFiles  # noqa: E402
from simsiam.data.loaders import ShardViewLoader, build_train_loader, epoch_seed  # noqa: E402
from simsiam.data.shard_stream import stream_pieces, worker_block  # noqa: E402
from simsiam.data.shards import PACK_SEED, _indexed_tar, labelled_files, pack, read_shard, shard_reader  # noqa: E402

CLASSES = ("ant", "bee", "cat")


def make_folder(root: Path, per_class: int = 16) -> Path:
    """FOLDER/<class>/i.jpg, 12x10 px, each image's class readable from its mean colour."""
    for c, name in enumerate(CLASSES):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            Image.new("RGB", (12, 10), (40 + 80 * c, i, 0)).save(root / name / f"{i}.jpg", quality=95)
    return root


@pytest.fixture
def shards(tmp_path) -> Path:
    out = tmp_path / "shards"
    pack(str(make_folder(tmp_path / "photos")), str(out), per_shard=10, progress=False, log=lambda _: None)
    return out


def shards_cfg(data_dir: Path, batch: int = 8, workers: int = 0, pipeline: str = "auto"):
    cfg = get_preset("digits")
    cfg.data.dataset, cfg.data.data_dir, cfg.data.eval_split = "shards", str(data_dir), ""
    cfg.data.image_size, cfg.data.num_workers, cfg.data.pipeline = 8, workers, pipeline
    cfg.optim.batch_size = batch
    return cfg


def loader_for(cfg) -> ShardViewLoader:
    return build_train_loader(load_dataset("shards", "train", cfg.data.data_dir), cfg, 2, torch.device("cpu"))


def indices(loader, epoch: int, start_batch: int = 0) -> list[list[int]]:
    return [b["index"].tolist() for b in loader.epoch(epoch, start_batch)]


def test_pack_writes_shards_of_the_webdataset_layout(shards):
    index = json.loads((shards / "shards.json").read_text())
    assert index["classes"] == list(CLASSES) and index["images"] == 48
    assert [s["images"] for s in index["shards"]] == [10, 10, 10, 10, 8]
    with tarfile.open(shards / "shard-000000.tar") as tar:
        names = tar.getnames()
        key = names[0].split(".")[0]
        member = tar.extractfile(f"{key}.jpg").read()
        label = int(tar.extractfile(f"{key}.cls").read())
    assert len(names) == 20 and sorted(names[:2]) == [f"{key}.cls", f"{key}.jpg"]
    # the file's own bytes, and its class from the sub-folder
    red = np.asarray(Image.open(io.BytesIO(member))).reshape(-1, 3)[:, 0].mean()
    assert CLASSES[label] == CLASSES[int(round((red - 40) / 80))]
    # the order is mixed at packing: the first shard does not hold one class
    with tarfile.open(shards / "shard-000000.tar") as tar:
        labels = {int(tar.extractfile(n).read()) for n in tar.getnames() if n.endswith(".cls")}
    assert len(labels) > 1


def _streamed(path: Path) -> list[dict]:
    """The shard's samples as WebDataset's streaming tar reader gives them (``__url__`` aside)."""
    import webdataset as wds

    samples = wds.tarfile_samples([{"url": str(path)}], handler=lambda exn: True)
    return [{k: v for k, v in s.items() if k != "__url__"} for s in samples]


def _read(path: Path, first: int = 0, errors: list | None = None) -> list[dict]:
    def on_error(exn):
        (errors if errors is not None else []).append(exn)
        return True

    return [{k: v for k, v in s.items() if k != "__url__"} for s in read_shard(str(path), on_error, first)]


def test_the_indexed_reader_gives_the_streaming_readers_samples(shards):
    pytest.importorskip("wids")
    path = shards / "shard-000001.tar"
    assert shard_reader() == "through their tar index (wids)"
    tar = _indexed_tar(str(path))
    assert tar is not None and len(tar) == 20  # read through the index: image and label of 10 samples
    tar.close()
    streamed = _streamed(path)
    assert len(streamed) == 10 and all(set(s) == {"__key__", "jpg", "cls"} for s in streamed)
    for first in (0, 3, 10):  # from the first sample, from inside the shard, past its end
        assert _read(path, first) == streamed[first:]


def test_a_tar_cut_short_or_not_a_tar_goes_to_the_streaming_reader(shards, tmp_path):
    whole = (shards / "shard-000000.tar").read_bytes()
    cut = tmp_path / "cut.tar"
    cut.write_bytes(whole[:len(whole) // 2 // 512 * 512 + 700])  # inside a member, past a header
    assert _indexed_tar(str(cut)) is None
    errors: list = []
    got = _read(cut, 0, errors)
    assert got == _streamed(cut) and 0 < len(got) < 10 and errors
    assert got[:-1] == _streamed(shards / "shard-000000.tar")[:len(got) - 1]  # the last may be a part
    junk = tmp_path / "junk.tar"
    junk.write_bytes(b"this is not a tar file\n" * 100)
    assert _indexed_tar(str(junk)) is None


def test_without_wids_the_streaming_reader_reads_the_shards(shards, monkeypatch):
    monkeypatch.setitem(sys.modules, "wids.wids_mmtar", None)  # its import fails, as when not installed
    path = shards / "shard-000002.tar"
    assert _indexed_tar(str(path)) is None
    assert _read(path, 4) == _streamed(path)[4:]
    assert "read in the main process by WebDataset's streaming tar reader (faster: pip install wids==" in \
        loader_for(shards_cfg(shards, workers=-1)).describe()


def test_pack_refuses_to_overwrite_and_names_a_missing_folder(shards, tmp_path, capsys):
    assert main(["pack", str(tmp_path / "photos"), "--out", str(shards), "--quiet"]) == 2
    assert "already holds shards" in capsys.readouterr().err
    assert main(["pack", str(tmp_path / "nowhere"), "--out", str(tmp_path / "s2"), "--quiet"]) == 2
    assert "nowhere is not a directory" in capsys.readouterr().err


def test_worker_blocks_and_stream_pieces():
    assert [worker_block(7, 3, r) for r in range(3)] == [(0, 3), (3, 2), (5, 2)]
    assert stream_pieces([10, 10, 5], [2, 0, 1], 3, 17) == [(2, 3, 5), (0, 0, 10), (1, 0, 2)]


@pytest.mark.parametrize("workers,pipeline", [(0, "auto"), (2, "auto"), (2, "per_image")])
def test_one_process_sees_every_image_once_per_epoch_reshuffled(shards, workers, pipeline):
    loader = loader_for(shards_cfg(shards, batch=8, workers=workers, pipeline=pipeline))
    assert len(loader) == 6  # 48 images // 8
    first, second = indices(loader, 0), indices(loader, 1)
    for epoch in (first, second):
        assert sorted(sum(epoch, [])) == list(range(48)) and all(len(b) == 8 for b in epoch)
    assert first != second
    assert indices(loader, 0) == first  # a function of (seed, epoch)


@pytest.mark.parametrize("pipeline", ["auto", "per_image"])
def test_views_and_labels_are_the_images_own(shards, pipeline):
    batch = next(iter(loader_for(shards_cfg(shards, batch=8, pipeline=pipeline)).epoch(0)))
    assert [v.shape for v in batch["views"]] == [(8, 3, 8, 8)] * 2 and batch["skipped"] == []
    index = json.loads((shards / "shards.json").read_text())
    assert set(batch["labels"].tolist()) <= set(range(len(index["classes"])))


@pytest.mark.parametrize("pipeline", ["auto", "per_image"])
def test_a_resumed_epoch_is_the_rest_of_the_same_epoch(shards, pipeline):
    loader = loader_for(shards_cfg(shards, batch=8, workers=2, pipeline=pipeline))
    whole = list(loader.epoch(3))
    for start in (1, 2, 5):
        resumed = list(loader.epoch(3, start))
        assert [b["index"].tolist() for b in resumed] == [b["index"].tolist() for b in whole[start:]], start
        for a, b in zip(resumed, whole[start:]):  # the same views: the skipped batches' draws passed over
            assert all(torch.equal(u, v) for u, v in zip(a["views"], b["views"])), start
    again = list(loader.epoch(3))  # and a function of (seed, epoch, workers)
    assert all(torch.equal(a["views"][1], b["views"][1]) for a, b in zip(again, whole))


def mixed_folder(root: Path) -> Path:
    """Landscape, portrait, square and wider-than-4:3 JPEGs in 2 classes, with detail to crop."""
    shapes = [(20, 15), (15, 20), (16, 16), (30, 12), (14, 18), (24, 18)]
    rng = np.random.default_rng(0)
    for c in range(2):
        (root / f"c{c}").mkdir(parents=True)
        for i in range(12):
            w, h = shapes[(i + c) % len(shapes)]
            pixels = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / f"c{c}" / f"{i}.jpg", quality=90)
    return root


def test_batched_shards_decode_as_the_encoded_pipeline_and_make_the_caches_views(tmp_path):
    """The workers hand on the files' own bytes; the main process decodes them as the encoded pipeline
    does (``decode_batch`` + ``into_slots``: the views equal exactly) -- which is the decoded cache
    to the encoded pipeline's stated tolerance (tests/test_encoded_pipeline.py: 1 level of 255 in the
    stored pixels, 0.03 in the views; the resizes round differently)."""
    photos = mixed_folder(tmp_path / "photos")
    pack(str(photos), str(tmp_path / "shards"), per_shard=7, progress=False, log=lambda _: None)
    paths, labels, classes = labelled_files(str(photos))
    cache = cached(ImageFiles(paths, labels, "mixed", len(classes), classes=classes), 8, tmp_path / "cache",
                   log=lambda _: None, progress=False)
    assert cache.sizes is not None and cache.images.shape == (24, 3, 8, 10)  # whole photos, 4:3 slots
    stored = list(range(len(paths)))
    random.Random(PACK_SEED).shuffle(stored)  # shard position -> file, as pack laid them out
    cfg = shards_cfg(tmp_path / "shards", batch=8, workers=2)
    loader = loader_for(cfg)
    assert loader.describe().startswith(f"batched pipeline streaming 4 shard(s) read by 2 worker(s) {shard_reader()}")
    augment = BatchAugment(cfg.aug, 8, 3, cache.mean, cache.std, kernel=cfg.data.augment_kernel)
    seed = epoch_seed(cfg.run.seed, 1, 1)  # BatchedViewLoader's generator, rank 0
    encoded_gen, cache_gen = torch.Generator().manual_seed(seed), torch.Generator().manual_seed(seed)
    seen = []
    for batch in loader.epoch(1):
        rows = [stored[i] for i in batch["index"].tolist()]
        seen += rows
        assert batch["labels"].tolist() == cache.labels[rows].tolist() and batch["skipped"] == []
        blobs = [np.frombuffer(bytearray(Path(paths[r]).read_bytes()), dtype=np.uint8) for r in rows]
        decoded, skipped = decode_batch(blobs, [paths[r] for r in rows], 3, 8, torch.device("cpu"))
        images, sizes = into_slots([d[0] for d in decoded], [d[1] for d in decoded], 8)
        assert skipped == [] and torch.equal(sizes, cache.sizes[rows])
        assert (images.int() - cache.images[rows][..., :images.shape[3]].int()).abs().max() <= 1
        for got in batch["views"]:
            assert torch.equal(got, augment(images, encoded_gen, sizes))
            from_cache = augment(cache.images[rows], cache_gen, cache.sizes[rows])
            assert (got - from_cache).abs().max() <= 0.03
    assert sorted(seen) == list(range(24))
    # what the workers hand on: each file's own bytes, named by shard and member
    loader.stream.set_epoch(0)
    for batch in loader.loader:
        rows = [stored[i] for i in batch["index"].tolist()]
        assert [b.tobytes() for b in batch["blobs"]] == [Path(paths[r]).read_bytes() for r in rows]
        assert all(".tar: " in name and name.endswith(".jpg") for name in batch["names"])


def _shard_worker(rank, port, data_dir, out_dir):
    join(rank, port)
    # The pool's rank processes are daemons, which multiprocessing forbids to start DataLoader workers;
    # torchrun's are not. Said otherwise here, for this task: the workers end with the loader's epoch.
    multiprocessing.current_process()._config["daemon"] = False
    out = {}
    for pipeline in ("auto", "per_image"):
        loader = loader_for(shards_cfg(Path(data_dir), batch=8, workers=2, pipeline=pipeline))
        seen = {e: [b["index"] for b in loader.epoch(e)] for e in (0, 1)}
        out[pipeline] = {"len": len(loader), "seen": seen}
    torch.save(out, Path(out_dir) / f"shards{rank}.pt")
    dist.cleanup()


def test_two_ranks_of_two_workers_see_every_image_exactly_once_per_epoch(shards, tmp_path):
    spawn(_shard_worker, str(shards), str(tmp_path))
    saved = [torch.load(tmp_path / f"shards{r}.pt", weights_only=True) for r in range(WORLD)]
    for pipeline in ("auto", "per_image"):  # the batched pipeline (the default) and the per-image one
        ranks = [s[pipeline] for s in saved]
        assert ranks[0]["len"] == ranks[1]["len"] == 6
        for e in (0, 1):
            assert all(len(r["seen"][e]) == 6 and all(len(b) == 4 for b in r["seen"][e]) for r in ranks)
            assert sorted(torch.cat([torch.cat(r["seen"][e]) for r in ranks]).tolist()) == list(range(48))
        assert torch.cat(ranks[0]["seen"][0]).tolist() != torch.cat(ranks[0]["seen"][1]).tolist()


def _rewrite(path: Path, change) -> None:
    """The shard ``path`` with each member passed through ``change(name, data) -> data or None (drop)``."""
    with tarfile.open(path) as tar:
        members = [(m.name, tar.extractfile(m).read()) for m in tar.getmembers()]
    with tarfile.open(path, "w") as tar:
        for name, data in members:
            data = change(name, data)
            if data is not None:
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))


def test_bad_members_and_bad_shards_are_skipped_with_a_line_naming_them(shards, tmp_path):
    truncated = write_truncated_jpeg(tmp_path / "t.jpg").read_bytes()
    first = {}

    def break_some(name, data):
        key, kind = name.split(".", 1)
        first.setdefault(kind, key)
        if kind == "jpg" and key == first["jpg"]:
            return truncated  # the first image cut off halfway
        if kind == "cls" and len(first) == 2 and first.get("second_cls") is None and key != first["cls"]:
            first["second_cls"] = key
            return None  # the second image loses its label
        return data

    _rewrite(shards / "shard-000001.tar", break_some)
    (shards / "shard-000003.tar").write_text("this is not a tar file\n")
    loader = loader_for(shards_cfg(shards, batch=8, workers=2))
    batches = list(loader.epoch(0))
    skipped = sum((b["skipped"] for b in batches), [])
    assert len(batches) == 6 and all(b["views"][0].shape[0] == 4 or b["views"][0].shape[0] == 8 for b in batches)
    assert len(skipped) == 12  # 1 truncated + 1 unlabelled + the 10 images of the broken shard
    assert sum("shard-000001.tar" in s and "cannot decode" in s for s in skipped) == 1
    assert sum("shard-000001.tar" in s and "no .cls label" in s for s in skipped) == 1
    assert sum("shard-000003.tar" in s and "not a readable tar" in s for s in skipped) == 10
    assert all("\n" not in s for s in skipped)


def test_on_a_cpu_the_batched_pipeline_reads_the_shards_in_the_main_process(shards):
    from simsiam.data.loaders import default_workers

    assert loader_for(shards_cfg(shards, workers=-1)).workers == 0
    assert loader_for(shards_cfg(shards, workers=-1, pipeline="per_image")).workers == default_workers()
    assert loader_for(shards_cfg(shards, workers=2)).workers == 2  # data.num_workers given: kept


def test_config_refusals_and_a_missing_index(shards, tmp_path, capsys):
    out = str(tmp_path / "run")
    base = ["pretrain", "--preset", "digits", "--out-dir", out, "--quiet", "data.dataset=shards",
            f"data.data_dir={shards}", "data.eval_split="]
    assert main(base + ["data.train_limit=10"]) == 2
    assert "cannot take a subset of streamed shards" in capsys.readouterr().err
    assert main(base[:-1] + ["data.eval_split=test"]) == 2
    assert "data.eval_split=\"\"" in capsys.readouterr().err
    assert main(base[:5] + ["data.dataset=shards", f"data.data_dir={tmp_path}", "data.eval_split="]) == 2
    assert "simsiam pack" in capsys.readouterr().err
    assert loader_for(shards_cfg(shards, pipeline="batched")).augment is not None
    assert loader_for(shards_cfg(shards, pipeline="per_image")).describe().startswith("per-image pipeline")


def test_without_torchvisions_decoder_auto_streams_per_image_and_batched_is_refused(shards, monkeypatch):
    monkeypatch.setattr("simsiam.data.loaders.decoder_unavailable", lambda: "RuntimeError: no libjpeg")
    described = loader_for(shards_cfg(shards)).describe()
    assert described.startswith("per-image pipeline") and "no libjpeg" in described
    with pytest.raises(ValueError, match="needs torchvision's JPEG decoder.*data.pipeline=per_image"):
        loader_for(shards_cfg(shards, pipeline="batched"))


def test_without_webdataset_one_line_says_how_to_install(shards, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "webdataset", None)  # import fails as when it is not installed
    assert main(["pack", str(tmp_path / "photos"), "--out", str(tmp_path / "s2"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert "pip install webdataset" in err and len(err.splitlines()) == 1


def test_pack_then_pretrain_on_the_shards(shards, tmp_path):
    out = tmp_path / "run"
    assert main(["pretrain", "--preset", "digits", "--out-dir", str(out), "--quiet", "--epochs", "1",
                 "data.dataset=shards", f"data.data_dir={shards}", "data.eval_split=", "data.image_size=8",
                 "optim.batch_size=16", "data.num_workers=1", "model.in_channels=0"]) == 0
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    epochs = [r for r in records if r.get("kind") == "epoch"]
    assert len(epochs) == 1 and epochs[0]["step"] == 3 and np.isfinite(epochs[0]["loss"])
