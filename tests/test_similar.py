"""simsiam similar: the exact chunked search, duplicate groups, and the command on a folder of PNGs."""
import csv
import shutil

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from fixtures_checkpoints import make_checkpoint_file
from PIL import Image
from sklearn.datasets import load_digits

from simsiam.cli import main
from simsiam.eval.similar import duplicate_groups, exact_search, read_embeddings


def test_chunked_search_equals_the_full_matrix_and_excludes_self():
    gen = torch.Generator().manual_seed(0)
    bank = F.normalize(torch.randn(50, 8, generator=gen), dim=1)
    queries = F.normalize(torch.randn(13, 8, generator=gen), dim=1)
    full = (queries @ bank.T).topk(5, dim=1)
    scores, index = exact_search(queries, bank, 5, query_chunk=4, bank_chunk=7)
    assert torch.equal(index, full.indices) and torch.allclose(scores, full.values)

    scores, index = exact_search(bank, bank, 3, exclude=list(range(50)), query_chunk=6, bank_chunk=9)
    sims = bank @ bank.T
    sims.fill_diagonal_(-float("inf"))
    assert torch.equal(index, sims.topk(3, dim=1).indices)
    assert not (index == torch.arange(50).unsqueeze(1)).any()


def test_faiss_search_agrees_with_torch():
    pytest.importorskip("faiss")
    from simsiam.eval.similar import faiss_search

    bank = F.normalize(torch.randn(40, 8, generator=torch.Generator().manual_seed(1)), dim=1)
    for exclude in (None, list(range(40))):
        expected = exact_search(bank, bank, 4, exclude=exclude)[1]
        assert torch.equal(faiss_search(bank, bank, 4, exclude=exclude)[1], expected)


def test_duplicate_groups_are_the_connected_components_above_the_threshold():
    base = F.normalize(torch.eye(4), dim=1)
    near = F.normalize(base[0] + 0.01 * base[1], dim=0)  # near image 0
    chain = F.normalize(near + 0.01 * base[1], dim=0)  # near the near one: joined through it
    feats = torch.stack([base[0], base[1], near, base[2], chain, base[2]])
    assert duplicate_groups(feats, 0.999, chunk=2) == [[0, 2, 4], [3, 5]]
    assert duplicate_groups(feats, 1.01) == []


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """60 digits as PNG files (two of them copied under another name: exact duplicates)."""
    root = tmp_path_factory.mktemp("similar")
    images = root / "images"
    images.mkdir()
    digits = load_digits()
    for i in range(60):
        Image.fromarray((digits.images[i] * 16).astype(np.uint8)).save(images / f"{i:03d}_{digits.target[i]}.png")
    shutil.copy(images / "005_5.png", images / "copy_of_005.png")
    shutil.copy(images / "017_7.png", images / "copy_of_017.png")
    path, _, _ = make_checkpoint_file(root / "checkpoint.pt")
    return path, images, root


def test_similar_writes_neighbours_grid_and_duplicates(folder, tmp_path, capsys):
    ckpt, images, _ = folder
    out = tmp_path / "out"
    query = images / "005_5.png"
    assert main(["similar", str(ckpt), "--data", str(images), "--query", str(query), "--k", "4",
                 "--duplicates", "0.9999", "--out", str(out), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "torch (exact, chunked)" in printed and "62 images for 1 queries" in printed
    with open(out / "neighbours.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [int(r["rank"]) for r in rows] == [1, 2, 3, 4]
    # The query and its copy are both in the folder: they are its two nearest, at cosine 1.
    assert {r["neighbour"].rsplit("/", 1)[1] for r in rows[:2]} == {"005_5.png", "copy_of_005.png"}
    assert float(rows[1]["cosine"]) == pytest.approx(1.0, abs=1e-5)
    assert float(rows[2]["cosine"]) < float(rows[1]["cosine"]) + 1e-6
    grid = Image.open(out / "neighbours.png")
    assert grid.size[0] == 5 * (96 + 4) and grid.size[1] == 96 + 14
    with open(out / "duplicates.csv", newline="") as fh:
        groups = {}
        for r in csv.DictReader(fh):
            groups.setdefault(r["group"], set()).add(r["path"].rsplit("/", 1)[1])
    assert sorted(map(sorted, groups.values())) == [["005_5.png", "copy_of_005.png"], ["017_7.png", "copy_of_017.png"]]


def test_similar_reuses_embed_output_and_searches_every_image(folder, tmp_path):
    ckpt, images, _ = folder
    assert main(["embed", str(ckpt), "--data", str(images), "--out", str(tmp_path / "emb"), "--quiet"]) == 0
    feats, paths = read_embeddings(tmp_path / "emb")
    out = tmp_path / "out"
    assert main(["similar", str(ckpt), "--embeddings", str(tmp_path / "emb"), "--k", "3", "--out", str(out)]) == 0
    with open(out / "neighbours.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 3 * len(paths) and all(r["query"] != r["neighbour"] for r in rows)  # never itself
    assert not (out / "embedding").exists()  # nothing embedded again


def test_similar_errors_are_one_clear_line(folder, tmp_path, capsys):
    ckpt, images, _ = folder
    assert main(["similar", str(ckpt), "--out", str(tmp_path / "o")]) != 0
    assert "--data DIR" in capsys.readouterr().err
    assert main(["similar", str(ckpt), "--embeddings", str(tmp_path), "--out", str(tmp_path / "o")]) != 0
    assert "no embeddings.npy" in capsys.readouterr().err
    assert main(["similar", str(ckpt), "--data", str(images), "--query", "nope.png", "--out", str(tmp_path / "o"),
                 "--quiet"]) != 0
    assert "not found: nope.png" in capsys.readouterr().err
